"""The writer's lease: one run at a time writes an output, and a run that stops holding it knows at once.

On S3 the lease is an object created with a conditional write (``If-None-Match: *``), renewed and released with
``If-Match`` on its ETag, so of two runs racing for it exactly one wins, however slow the store answers. A lease
not renewed for LEASE_TTL_S by the store's own clock (its Last-Modified against the Date of the same reply) has
lapsed and is taken over, again by a conditional write. On a local disk it is a file lock, which the kernel
drops when its holder dies.
"""

import fcntl
import json
import logging
import os
import socket
import threading
import uuid
from email.utils import parsedate_to_datetime

from botocore.exceptions import ClientError
from s3fs import S3FileSystem

from .. import schema
from ..config import UserError
from . import fs as storage

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # a lease not renewed for this long, by the store's clock, belongs to a dead run
RENEW_EVERY_S = LEASE_TTL_S / 4  # so that a few missed renewals in a row are needed to lose it


class OutputBusy(UserError, RuntimeError):
    """Another run is writing to this output."""


class LeaseLost(UserError, RuntimeError):
    """Another run took this output over: the holder must stop before it writes or deletes anything more."""

    exit_status = 1
    prefix = "run stopped: "


def _busy(holder: dict) -> OutputBusy:
    return OutputBusy(f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')}) is writing to "
                      f"this output; wait for it to finish, or stop it (its lease lapses {LEASE_TTL_S:.0f} s after it "
                      "stops)")


class Lease:
    """Exclusive right to write an output for as long as the run holds it; ``check`` before a destructive step."""

    def __init__(self, output: str, run_id: str, options: dict | None = None) -> None:
        fs, path = storage.filesystem(storage.join(output, schema.LEASE_FILE), options)
        record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        if storage.is_local(fs):
            self._holder: _LocalLock | _S3Lease = _LocalLock(path, record)
        elif isinstance(fs, S3FileSystem):
            self._holder = _S3Lease(fs, path, record)
        else:
            raise storage.StoreError(f"captioner writes its output to a local folder or to S3, not {output!r}: "
                                     "only those give the conditional writes that keep a second run out")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # set when another run took the lease over; the holder must stop writing

    def __enter__(self) -> "Lease":
        self._holder.acquire()
        if isinstance(self._holder, _S3Lease):
            self._thread = threading.Thread(target=self._renew, daemon=True, name="captioner-lease")
            self._thread.start()
        return self

    def check(self) -> None:
        """Raise LeaseLost unless the store still says this run holds the lease."""
        if self.lost or not self._holder.holds():
            self.lost = True
            raise LeaseLost("another run took over this output's lease; stopping so that only one run writes")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            try:
                if not self._holder.renew():
                    self.lost = True
                    log.error("another run took over the lease on this output; stopping")
                    return
            except Exception:  # a missed renewal is retried; losing the lease takes several in a row
                log.warning("could not renew the output lease", exc_info=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if not self.lost:
            self._holder.release()


class _LocalLock:
    """An exclusive ``flock`` on the lease file, whose content names the holder for the busy message."""

    def __init__(self, path: str, record: dict) -> None:
        self.path, self.record = path, record
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with os.fdopen(fd, "rb") as f:
                    raise _busy(_parse(f.read())) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder unlinked while this run waited on it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.record).encode())
        self.fd = fd

    def holds(self) -> bool:
        return self.fd is not None  # the kernel keeps the lock until the process closes it or dies

    def renew(self) -> bool:
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


class _S3Lease:
    """The lease object on S3, written only conditionally; ``etag`` is the version this run last wrote."""

    def __init__(self, fs: S3FileSystem, path: str, record: dict) -> None:
        self.fs, self.record = fs, record
        self.bucket, self.key, _ = fs.split_path(path)
        self.etag: str | None = None

    def _put(self, **condition: str) -> str:
        body = json.dumps(self.record).encode()
        return self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]

    def _read(self) -> tuple[dict | None, str | None, float]:
        """(holder, its ETag, seconds since it was last written, by the store's clock); (None, None, 0) if none."""
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
            body = self.fs.cat_file(f"{self.bucket}/{self.key}")
        except FileNotFoundError:
            return None, None, 0.0
        date = head["ResponseMetadata"]["HTTPHeaders"].get("date")  # a store without it: never lapses by time
        age = (parsedate_to_datetime(date) - head["LastModified"]).total_seconds() if date else 0.0
        return _parse(body), head["ETag"], age

    def acquire(self) -> None:
        for _ in range(5):
            try:
                self.etag = self._put(IfNoneMatch="*")
                return
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
            holder, etag, age = self._read()
            if holder is None:
                continue  # released meanwhile: try to create it again
            if holder.get("token") == self.record["token"]:  # our own create, answered late and retried
                self.etag = etag
                return
            if not _lapsed(holder, age):
                raise _busy(holder)
            try:
                self.etag = self._put(IfMatch=etag)  # take a lapsed lease over: one contender wins
                log.warning("took over the lease of run %s, which stopped renewing it", holder.get("run_id"))
                return
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
        raise OutputBusy("the lease on this output keeps changing hands; rerun when the other runs have finished")

    def holds(self) -> bool:
        holder, etag, _ = self._read()
        if holder is not None and holder.get("token") == self.record["token"]:
            self.etag = etag
            return True
        return False

    def renew(self) -> bool:
        try:
            self.etag = self._put(IfMatch=self.etag)
            return True
        except Exception as exc:
            if not _precondition_failed(exc):
                raise
        return self.holds()  # a renewal that succeeded but whose answer was lost, then retried, is still ours

    def release(self) -> None:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except FileNotFoundError:
            pass
        except Exception as exc:
            if not _precondition_failed(exc):
                raise
            log.warning("the output lease had passed to another run before this one released it")


def _parse(data: bytes) -> dict:
    try:
        return json.loads(data)
    except ValueError:  # being written at this moment
        return {}


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns a 412 into FileExistsError or OSError; the botocore error underneath says which."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
    return isinstance(cause, ClientError) and (
        cause.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")
        or cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412))


def _lapsed(holder: dict, age_s: float) -> bool:
    """Not renewed for LEASE_TTL_S by the store's clock, or held by a process of this host that has died."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return age_s >= LEASE_TTL_S
