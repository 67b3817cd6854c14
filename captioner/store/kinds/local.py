"""A local disk (or a shared mount): the lease is an ``flock`` the kernel drops when its holder dies."""

import fcntl
import json
import os

import fsspec

from .base import Holder, Kind, busy, parse


class Local(Kind):
    name = "a local disk"
    protocols = ("file", "local")

    def lease(self, fs: fsspec.AbstractFileSystem, path: str, record: dict) -> Holder:
        return _Lock(path, record)


class _Lock(Holder):
    """An exclusive ``flock`` on the lease file, whose content names the holder for the busy message."""

    renews = False

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
                    raise busy(parse(f.read())) from None
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
