"""One path type for every store: fsspec URLs, with listing and atomic writes on top."""

import io
import posixpath
import urllib.parse
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import NoCredentialsError
from fsspec.implementations.local import LocalFileSystem
from s3fs import S3FileSystem

from ..config import UserError

# Tries per request when first checking a bucket: an unreachable store fails in seconds (s3fs still retries
# throttling on top, so a busy store passes).
CHECK_ATTEMPTS = 3


def filesystem(url: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``url`` and the path inside it (local paths become absolute)."""
    return fsspec.core.url_to_fs(url, **(options or {}))


class StoreError(UserError, RuntimeError):
    """The object store cannot be used as asked; the message names the bucket and what is missing."""


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see: an absolute path for local files, ``proto://...`` otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def version_tag(info: dict) -> str | None:
    """The object's ETag where the store has one, else its modification time, so changes are seen."""
    for key in ("ETag", "etag", "e_tag"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if value is not None:
            stamp = value.timestamp() if hasattr(value, "timestamp") else float(value)
            return f"mtime:{stamp:.6f}"
    return None


def identity(uri: str, options: dict | None = None) -> tuple[int, str | None]:
    """(size, version tag) of one object, for inputs whose manifest named only the URI."""
    fs, path = filesystem(uri, options)
    info = fs.info(path)
    return int(info.get("size") or 0), version_tag(info)


def redact(uri: str) -> str:
    """``uri`` without user info or query string, so tokens and presigned signatures never reach logs or records."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or not (parts.query or "@" in parts.netloc):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def check_access(url: str, options: dict | None = None, write: bool = False) -> None:
    """Fail fast, before any work or write, when an S3 bucket is unreachable, missing or forbidden.

    A few requests with few retries: list (s3:ListBucket) and read one object (s3:GetObject); for an output,
    write, read and delete a probe object instead (s3:PutObject, s3:GetObject, s3:DeleteObject), so a run never
    finds out at its last write. Other stores raise their own errors on first use.
    """
    options = options or {}
    quick = {**options, "config_kwargs": {
        **options.get("config_kwargs", {}), "retries": {"total_max_attempts": CHECK_ATTEMPTS, "mode": "standard"}}}
    fs, path = filesystem(url, quick)
    if not isinstance(fs, S3FileSystem):
        return
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
            raise StoreError(f"no credentials for bucket {bucket!r}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                             "pass --profile, or --anon for a public bucket") from exc
        except Exception as exc:
            raise StoreError(f"cannot reach the object store at {where} for bucket {bucket!r}: {type(exc).__name__}: "
                             f"{exc}. Check --endpoint-url and the network") from exc

    prefix = f"s3://{bucket}/{key}"
    listed = attempt("s3:ListBucket", f"listing {prefix}", "list_objects_v2", Prefix=key, MaxKeys=1)
    if not write:
        first = listed.get("Contents", [{}])[0].get("Key")
        if first is not None:
            attempt("s3:GetObject", f"reading s3://{bucket}/{first}", "head_object", Key=first)
        return
    probe = join(key, f"_captioner-probe-{uuid.uuid4().hex}") if key else f"_captioner-probe-{uuid.uuid4().hex}"
    attempt("s3:PutObject", f"writing to {prefix}", "put_object", Key=probe, Body=b"")
    try:
        attempt("s3:GetObject", f"reading from {prefix}", "head_object", Key=probe)
    finally:
        try:
            attempt("s3:DeleteObject", f"deleting from {prefix}", "delete_object", Key=probe)
        except StoreError as exc:
            raise StoreError(f"{exc}; the empty probe object s3://{bucket}/{probe} is left behind") from exc


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def read_bytes(uri: str, options: dict | None = None, limit: int | None = None) -> bytes:
    """The object's bytes, or only its first ``limit`` (one ranged request), so a huge object is never pulled whole."""
    fs, path = filesystem(uri, options)
    return fs.cat_file(path) if limit is None else fs.cat_file(path, start=0, end=limit)


def remove(uri: str, options: dict | None = None) -> None:
    """Delete one file; one already gone is no error."""
    fs, path = filesystem(uri, options)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove_tree(uri: str, options: dict | None = None) -> None:
    """Delete a folder and everything under it; one already gone is no error."""
    fs, path = filesystem(uri, options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_bytes_atomic(uri: str, data: bytes, options: dict | None = None) -> None:
    """Readers see the whole file or nothing: a local temp file renamed into place, or one object PUT."""
    fs, path = filesystem(uri, options)
    if is_local(fs):
        parent = posixpath.dirname(path)
        fs.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def write_parquet_atomic(uri: str, table: pa.Table, options: dict | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(uri, buf.getvalue(), options)
