"""The seam between captioner and a kind of store: what the one-writer lease and the fail-fast access check need
of it, as one small interface; everything else (listing, manifests, markers, writers, query) is plain fsspec and
works on every kind unchanged. No module here imports another store kind's client library.
"""

import json
import os
import socket
import urllib.parse
from abc import ABC, abstractmethod
from typing import ClassVar

import fsspec

from ...config import UserError

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
