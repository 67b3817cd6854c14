import subprocess
import sys
import time

import pytest

from captioner.store import lease as lease_module
from captioner.store.lease import Lease, OutputBusy


def test_lease_refuses_a_second_writer_and_is_released(tmp_path):
    out = str(tmp_path)
    with Lease(out, "run-1"):
        with pytest.raises(OutputBusy, match="run-1"):
            with Lease(out, "run-2"):
                pass
    assert not (tmp_path / "_lease.json").exists()
    with Lease(out, "run-3"):
        pass


def test_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    out = str(tmp_path)
    code = f"from captioner.store.lease import Lease; Lease({out!r}, 'doomed').__enter__(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "_lease.json").exists()  # left behind, as after SIGKILL
    with Lease(out, "next"):
        pass


def test_lease_of_a_silent_remote_holder_lapses(tmp_path, monkeypatch):
    out = str(tmp_path)
    lease = Lease(out, "remote")
    lease.record["host"] = "some-other-host"
    lease._write()
    with pytest.raises(OutputBusy):
        Lease(out, "mine").__enter__()
    monkeypatch.setattr(lease_module, "LEASE_TTL_S", 0.01)
    time.sleep(0.05)
    with Lease(out, "mine"):
        pass
