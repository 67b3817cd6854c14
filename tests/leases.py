"""Helpers of the lease tests on every store kind."""

import contextlib
import subprocess
import sys
import threading

from captioner.store.lease import Lease, OutputBusy


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


@contextlib.contextmanager
def two_contenders_for_a_lapsed_lease(out: str, options: dict, proxy):
    """A lapsed lease and two runs taking it over; the late one's conditional takeover is held back by ``proxy``
    until the early one has taken over, however the two are scheduled. Yields (the old holder, the early run's
    lease, the late run's outcome: its Lease or the OutputBusy it got), the early lease held."""
    stale = Lease(out, "stale", options).__enter__()
    lapse(stale)
    gate, outcome = proxy.hold("PUT", "_lease.json", header=b"if-match"), {}

    def contend_late() -> None:
        try:
            outcome["late"] = Lease(out, "late", options).__enter__()
        except OutputBusy as exc:
            outcome["late"] = exc

    thread = threading.Thread(target=contend_late)
    thread.start()
    assert gate.reached.wait(30)  # the late contender's takeover is on its way
    with Lease(out, "early", options) as early:
        gate.open()
        thread.join(60)
        yield stale, early, outcome["late"]
