"""The seam between captioner and a kind of store: what the one-writer lease and the fail-fast access check need
of it, as one small interface; everything else (listing, manifests, markers, writers, query) is plain fsspec and
works on every kind unchanged. No module here imports another store kind's client library.
"""

import json
import logging
import os
import socket
import urllib.parse
from abc import ABC, abstractmethod
from typing import ClassVar

import fsspec

from ...config import UserError

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # a lease not renewed for this long, by the store's clock, belongs to a dead run


class StoreError(UserError, RuntimeError):
    """The object store cannot be used as asked; the message names the bucket and what is missing."""


class OutputBusy(UserError, RuntimeError):
    """Another run is writing to this output."""


class Holder(ABC):
    """One run's side of an output's lease object on one kind of store; every write to it is conditional."""

    renews: ClassVar[bool] = True  # whether the run must renew it (a kernel lock need not)

    @abstractmethod
    def acquire(self) -> None:
        """Take the lease, or raise OutputBusy naming its live holder; a lapsed holder's lease is taken over."""

    @abstractmethod
    def holds(self) -> bool:
        """Whether the store still says this run holds the lease."""

    @abstractmethod
    def renew(self) -> bool:
        """Write the lease again only if it is still this run's; False once another run has it."""

    @abstractmethod
    def release(self) -> None:
        """Give the lease up, only if it is still this run's."""


class ConditionalLease(Holder):
    """A lease object on a store with conditional writes, from three primitives each kind writes: a create that
    fails when the object exists, an overwrite only of a given version, and a read with the store's own clock.
    ``etag`` is the version this run last wrote."""

    def __init__(self, record: dict) -> None:
        self.record = record
        self.etag: str | None = None

    @abstractmethod
    def _create(self) -> str | None:
        """Write the record where no lease object exists: its version, or None when one does."""

    @abstractmethod
    def _replace(self, record: dict, etag: str) -> str | None:
        """Overwrite version ``etag`` with ``record``: the new version, or None when the object is another now."""

    @abstractmethod
    def _read(self) -> tuple[dict | None, str | None, float]:
        """(holder, its version, seconds since it was last written, by the store's clock); (None, None, 0) if none."""

    def acquire(self) -> None:
        for _ in range(5):
            self.etag = self._create()
            if self.etag is not None:
                return
            holder, etag, age = self._read()
            if holder is None:
                continue  # released meanwhile: try to create it again
            if holder.get("token") == self.record["token"]:  # our own create, answered late and retried
                self.etag = etag
                return
            if not lapsed(holder, age):
                raise busy(holder)
            self.etag = self._replace(self.record, etag)  # take a lapsed lease over: one contender wins
            if self.etag is not None:
                if not holder.get("released"):
                    log.warning("took over the lease of run %s, which stopped renewing it", holder.get("run_id"))
                return
        raise OutputBusy("the lease on this output keeps changing hands; rerun when the other runs have finished")

    def holds(self) -> bool:
        holder, etag, _ = self._read()
        if holder is not None and holder.get("token") == self.record["token"] and not holder.get("released"):
            self.etag = etag
            return True
        return False

    def renew(self) -> bool:
        new = self._replace(self.record, self.etag)
        if new is not None:
            self.etag = new
            return True
        return self.holds()  # a renewal that succeeded but whose answer was lost, then retried, is still ours


class Kind(ABC):
    """One kind of store, known by its fsspec protocols."""

    name: ClassVar[str]  # as messages say it
    protocols: ClassVar[tuple[str, ...]]

    def lease(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> Holder:
        raise StoreError(f"captioner cannot keep a second run out of an output on {self.name}, which gives no "
                         "conditional writes; write the output to a local folder, S3, or Azure Blob Storage")

    def check_access(self, url: str, options: dict, write: bool) -> None:
        """Fail fast, before any work, when the store is unreachable, the bucket missing or a permission absent."""


def busy(holder: dict) -> OutputBusy:
    return OutputBusy(f"run {holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('host')}) is writing to "
                      f"this output; wait for it to finish, or stop it (its lease lapses {LEASE_TTL_S:.0f} s after it "
                      "stops)")


def parse(data: bytes) -> dict:
    try:
        return json.loads(data)
    except ValueError:  # being written at this moment
        return {}


def lapsed(holder: dict, age_s: float) -> bool:
    """Released, not renewed for LEASE_TTL_S by the store's clock, or held by a dead process of this host."""
    if holder.get("released"):
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return age_s >= LEASE_TTL_S


def redact(uri: str) -> str:
    """``uri`` without user info or query string, so tokens and presigned signatures never reach logs or records."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or not (parts.query or "@" in parts.netloc):
        return uri
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
