"""S3 and the stores that speak its protocol (MinIO, Ceph RGW, R2...), as they really behave.

The lease object is created with ``If-None-Match: *`` and renewed with ``If-Match`` on its ETag, so of two runs
racing for it exactly one wins. Look-alikes differ from AWS, and the lease copes with each: some compare
``If-Match`` with the ETag without its quotes (a quoted, current ETag gets 412: the unquoted form is tried once the
store shows the ETag unchanged, and kept), some answer 412 instead of 404 for ``If-Match`` on a missing key (a 412
is always followed by a read), and some ignore ``If-Match`` on DeleteObject, so a release never deletes: it
overwrites the lease, conditionally, with a released record, which the next run takes over at once. A store that
ignores conditional writes altogether is refused by the output's access check, by name.
"""

import json
import logging
import posixpath
import uuid
from email.utils import parsedate_to_datetime

import fsspec
from botocore.exceptions import ClientError, NoCredentialsError

from .base import ConditionalLease, Holder, Kind, StoreError, parse, redact

log = logging.getLogger(__name__)

# Tries per request when first checking a bucket: an unreachable store fails in seconds (s3fs still retries
# throttling on top, so a busy store passes).
CHECK_ATTEMPTS = 3


class S3(Kind):
    name = "S3"
    protocols = ("s3", "s3a")

    def lease(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> Holder:
        return _Lease(fs, path, record)

    def check_access(self, url: str, options: dict, write: bool) -> None:
        """A few requests with few retries: list (s3:ListBucket) and read one object (s3:GetObject); for an output,
        write, read and delete a probe object instead (s3:PutObject, s3:GetObject, s3:DeleteObject), so a run never
        finds out at its last write, and create it a second time conditionally, which must be refused."""
        quick = {**options, "config_kwargs": {
            **options.get("config_kwargs", {}), "retries": {"total_max_attempts": CHECK_ATTEMPTS, "mode": "standard"}}}
        fs, path = fsspec.core.url_to_fs(url, **quick)
        bucket, key, _ = fs.split_path(path)
        where = redact(options.get("endpoint_url") or "AWS S3")

        def attempt(action: str, target: str, method: str, **kwargs) -> dict:
            try:
                return fs.call_s3(method, Bucket=bucket, **kwargs)
            except PermissionError as exc:
                raise StoreError(f"no permission for {target}: the credentials lack {action} on bucket {bucket!r} "
                                 f"({exc})") from exc
            except FileNotFoundError as exc:
                raise StoreError(f"bucket {bucket!r} does not exist at {where} ({exc})") from exc
            except NoCredentialsError as exc:
                raise StoreError(f"no credentials for bucket {bucket!r}: set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY, pass --profile, or --anon for a public bucket") from exc
            except Exception as exc:
                if precondition_failed(exc):
                    raise
                raise StoreError(f"cannot reach the object store at {where} for bucket {bucket!r}: "
                                 f"{type(exc).__name__}: {exc}. Check --endpoint-url and the network") from exc

        prefix = f"s3://{bucket}/{key}"
        listed = attempt("s3:ListBucket", f"listing {prefix}", "list_objects_v2", Prefix=key, MaxKeys=1)
        if not write:
            first = listed.get("Contents", [{}])[0].get("Key")
            if first is not None:
                attempt("s3:GetObject", f"reading s3://{bucket}/{first}", "head_object", Key=first)
            return
        probe = posixpath.join(key, f"_captioner-probe-{uuid.uuid4().hex}") if key else (
            f"_captioner-probe-{uuid.uuid4().hex}")
        attempt("s3:PutObject", f"writing to {prefix}", "put_object", Key=probe, Body=b"", IfNoneMatch="*")
        try:
            attempt("s3:GetObject", f"reading from {prefix}", "head_object", Key=probe)
            try:
                attempt("s3:PutObject", f"writing to {prefix}", "put_object", Key=probe, Body=b"", IfNoneMatch="*")
            except Exception as exc:
                if not precondition_failed(exc):
                    raise
            else:
                raise StoreError(f"the object store at {where} ignores conditional writes (If-None-Match), which "
                                 "keep a second run from writing the same output; write the output to a store that "
                                 "honours them (AWS S3, MinIO, Ceph RGW, R2) or a local folder")
        finally:
            try:
                attempt("s3:DeleteObject", f"deleting from {prefix}", "delete_object", Key=probe)
            except StoreError as exc:
                raise StoreError(f"{exc}; the empty probe object s3://{bucket}/{probe} is left behind") from exc


class _Lease(ConditionalLease):
    """The lease object, written only conditionally."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> None:
        super().__init__(record)
        self.fs = fs
        self.bucket, self.key, _ = fs.split_path(path)
        self.quoted = True  # whether this store compares If-Match with the quoted ETag, as AWS does

    def _put(self, record: dict, **condition: str) -> str:
        body = json.dumps(record).encode()
        return self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]

    def _create(self) -> str | None:
        try:
            return self._put(self.record, IfNoneMatch="*")
        except Exception as exc:
            if not precondition_failed(exc):
                raise
        return None

    def _replace(self, record: dict, etag: str) -> str | None:
        for quoted in dict.fromkeys((self.quoted, False)):
            try:
                new = self._put(record, IfMatch=etag if quoted else etag.strip('"'))
                self.quoted = quoted
                return new
            except FileNotFoundError:  # If-Match on a key that is gone (AWS answers 404)
                return None
            except Exception as exc:
                if not precondition_failed(exc):
                    raise
            if (self._read()[1] or "").strip('"') != etag.strip('"'):  # another version, or none: a true refusal
                return None
        return None

    def _read(self) -> tuple[dict | None, str | None, float]:
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            body = self.fs.cat_file(f"{self.bucket}/{self.key}")
        except FileNotFoundError:
            return None, None, 0.0
        date = head["ResponseMetadata"]["HTTPHeaders"].get("date")  # a store without it: never lapses by time
        age = (parsedate_to_datetime(date) - head["LastModified"]).total_seconds() if date else 0.0
        return parse(body), head["ETag"], age

    def release(self) -> None:
        """A conditional overwrite with a released record, never a delete: some stores ignore If-Match on
        DeleteObject, and an unconditional delete could remove the lease another run has taken since."""
        if self._replace({**self.record, "released": True}, self.etag) is None:
            log.warning("the output lease had passed to another run before this one released it")


def precondition_failed(exc: BaseException) -> bool:
    """s3fs turns a 412 into FileExistsError or OSError; the botocore error underneath says which."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
    return isinstance(cause, ClientError) and (
        cause.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")
        or cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412))
