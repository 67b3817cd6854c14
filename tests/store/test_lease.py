import json
import subprocess
import sys
import threading
import time

import pytest

from captioner.config import StorageConfig
from captioner.store.kinds import base as lease_module
from captioner.store.fs import StoreError
from captioner.store.lease import Lease, LeaseLost, OutputBusy


def test_lease_refuses_a_second_writer_and_is_released(tmp_path):
    out = str(tmp_path)
    with Lease(out, "run-1") as first:
        with pytest.raises(OutputBusy, match="run-1"):
            with Lease(out, "run-2"):
                pass
        first.check()  # still ours
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


def test_outputs_on_stores_without_conditional_writes_are_refused():
    with pytest.raises(StoreError, match="memory://, which gives no conditional writes"):
        Lease("memory://out", "r1")


def _s3_options(endpoint: str) -> dict:
    return StorageConfig(endpoint_url=endpoint).options("s3://")


def test_of_two_runs_racing_through_a_slow_store_exactly_one_holds_the_s3_lease(s3, s3_server, faulty_s3):
    fs, bucket = s3
    out = f"s3://{bucket}/out"
    gate = faulty_s3.hold("PUT", "_lease.json")
    late, won = Lease(out, "late", _s3_options(faulty_s3.url)), Lease(out, "first", _s3_options(s3_server))
    outcome: dict = {}

    def start_late() -> None:
        try:
            late.__enter__()
            outcome["late"] = "holds"
        except OutputBusy as exc:
            outcome["late"] = str(exc)

    thread = threading.Thread(target=start_late)
    thread.start()
    assert gate.reached.wait(30)  # the late run's create is on its way, held back by the store
    with won:
        gate.open()
        thread.join(30)
        assert "run first" in outcome["late"]  # refused: the create was conditional
        won.check()
        assert json.loads(fs.cat_file(f"{bucket}/out/_lease.json"))["run_id"] == "first"
    assert json.loads(fs.cat_file(f"{bucket}/out/_lease.json"))["released"]  # overwritten, never deleted
    with Lease(out, "after", _s3_options(s3_server)) as after:  # a released lease is taken at once
        after.check()


def test_an_s3_lease_taken_over_is_lost_by_its_holder_and_checked_before_destructive_steps(s3, s3_server,
                                                                                           monkeypatch):
    fs, bucket = s3
    out = f"s3://{bucket}/out"
    stale = Lease(out, "stale", _s3_options(s3_server))
    stale.__enter__()
    stale._stop.set()  # its renewals stop, as when its machine hangs
    with pytest.raises(OutputBusy, match="run stale"):
        Lease(out, "next", _s3_options(s3_server)).__enter__()
    monkeypatch.setattr(lease_module, "LEASE_TTL_S", 0.5)
    time.sleep(1.5)  # lapsed by the store's clock (whole seconds)
    with Lease(out, "next", _s3_options(s3_server)) as taken:
        assert not stale._holder.renew()
        with pytest.raises(LeaseLost, match="another run took over"):
            stale.check()
        stale.__exit__(None, None, None)  # a lost lease is not released: the new holder keeps it
        taken.check()
        assert json.loads(fs.cat_file(f"{bucket}/out/_lease.json"))["run_id"] == "next"


def test_an_output_on_gcs_is_refused_with_what_to_do_instead():
    with pytest.raises(StoreError, match="does not write its output to Google Cloud Storage yet"):
        Lease("gs://bucket/out", "r1")
