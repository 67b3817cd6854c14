"""The writer's lease: one run at a time writes an output."""

import json
import logging
import os
import socket
import threading
import time
import uuid

from .. import schema
from ..config import UserError
from . import fs as storage

log = logging.getLogger(__name__)

LEASE_TTL_S = 60.0  # a lease not refreshed for this long belongs to a dead run
LEASE_SETTLE_S = 1.0  # wait before checking a new lease is still ours, so two starting runs see each other


class OutputBusy(UserError, RuntimeError):
    """Another run is writing to this output."""


class Lease:
    """Exclusive right to write an output, kept alive by a heartbeat; refuses a second writer.

    A lease whose heartbeat stopped (the holder died) is taken over; one held by a dead process on
    this host is taken over at once, so rerunning after a crash never waits.
    """

    def __init__(self, output: str, run_id: str, options: dict | None = None) -> None:
        self.path = storage.join(output, schema.LEASE_FILE)
        self.options = options
        self.record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # set when another run took the lease over; the holder must stop writing

    def _read(self) -> dict | None:
        fs, path = storage.filesystem(self.path, self.options)
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _write(self) -> None:
        storage.write_bytes_atomic(self.path, json.dumps({**self.record, "heartbeat": time.time()}).encode(),
                                   self.options)

    def _alive(self, holder: dict) -> bool:
        if holder["host"] == socket.gethostname():
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return time.time() - holder.get("heartbeat", 0) < LEASE_TTL_S

    def __enter__(self) -> "Lease":
        holder = self._read()
        if holder and holder["token"] != self.record["token"] and self._alive(holder):
            raise OutputBusy(
                f"run {holder['run_id']} (pid {holder['pid']} on {holder['host']}) is writing to this output; "
                f"wait for it to finish, or stop it (its lease lapses {LEASE_TTL_S:.0f} s after it stops)"
            )
        self._write()
        time.sleep(LEASE_SETTLE_S)
        if not self._owned():  # lost a race with another starting run
            raise OutputBusy("another run took this output at the same moment; rerun when it has finished")
        self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="captioner-lease")
        self._thread.start()
        return self

    def _owned(self) -> bool:
        holder = self._read()
        return bool(holder) and holder["token"] == self.record["token"]

    def _heartbeat(self) -> None:
        while not self._stop.wait(LEASE_TTL_S / 4):
            try:
                if not self._owned():
                    self.lost = True
                    log.error("another run took over the lease on this output; stopping")
                    return
                self._write()
            except Exception:  # a missed beat is retried; losing the lease needs several
                log.warning("could not refresh the output lease", exc_info=True)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._owned():
            fs, path = storage.filesystem(self.path, self.options)
            fs.rm(path)
