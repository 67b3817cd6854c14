"""The writer's lease: one run at a time writes an output, and a run that stops holding it knows at once.

The lease is one object beside the output, written only conditionally; how, per kind of store, is the store kind's
own (``kinds/``: a conditional create and renewals on S3 and Azure, a kernel lock on a local disk). A lease not
renewed for LEASE_TTL_S by the store's own clock has lapsed and is taken over, again conditionally, so of two runs
racing for it exactly one wins, however slow the store answers.
"""

import logging
import os
import socket
import threading
import uuid

from .. import schema
from ..config import UserError
from . import fs as storage
from .kinds import kind_of
from .kinds.base import LEASE_TTL_S, OutputBusy

log = logging.getLogger(__name__)

RENEW_EVERY_S = LEASE_TTL_S / 4  # so that a few missed renewals in a row are needed to lose it
__all__ = ["Lease", "LeaseLost", "OutputBusy"]


class LeaseLost(UserError, RuntimeError):
    """Another run took this output over: the holder must stop before it writes or deletes anything more."""

    exit_status = 1
    prefix = "run stopped: "


class Lease:
    """Exclusive right to write an output for as long as the run holds it; ``check`` before a destructive step."""

    def __init__(self, output: str, run_id: str, options: dict | None = None) -> None:
        fs, path = storage.filesystem(storage.join(output, schema.LEASE_FILE), options)
        record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}
        self._holder = kind_of(fs).lease(fs, path, record)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # set when another run took the lease over; the holder must stop writing

    def __enter__(self) -> "Lease":
        self._holder.acquire()
        if self._holder.renews:
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
