"""Helpers of the lease tests on every store kind."""

import subprocess
import sys

from captioner.store.lease import Lease


def dead_pid() -> int:
    """The pid of a process of this host that has ended: a lease naming it has lapsed at once, whatever the clock."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def lapse(lease: Lease) -> None:
    """Make ``lease`` lapsed, as when its run died: its renewals stop, its record names a dead process."""
    lease._stop.set()
    lease._holder.record["pid"] = dead_pid()
    assert lease._holder.renew()
