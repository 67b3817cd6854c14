"""The whole job writing to Azure Blob Storage (Azurite): ``captioner run`` as a user runs it, with the credentials
in AZURE_STORAGE_CONNECTION_STRING: two runs started together of which exactly one writes, a rerun that writes
nothing, and a killed run resumed exactly."""

import os
import subprocess
import sys
import time

import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from captioner.store import state
from conftest import jpeg_bytes
from faults import child_env
from pipeline_runs import kill_session, read_captions

pytestmark = pytest.mark.slow


def _images(folder, n: int):
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(i))
    return sorted(folder.iterdir())


def _command(tiny_model, photos, out: str) -> list[str]:
    return [sys.executable, "-m", "captioner.cli", "run", str(photos), out, "--model", str(tiny_model),
            "--max-new-tokens", "6", "--batch-size", "2", "--decode-batch-size", "2", "--rows-per-file", "2"]


def _env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_ADDRESS": "local"}


def _rows(fs, container: str) -> list[tuple[str, str]]:
    rows = read_captions(f"{container}/out", filesystem=PyFileSystem(FSSpecHandler(fs)))
    pairs = list(rows)
    assert len(pairs) == len(set(pairs)), "a row was written twice"
    return sorted(pairs)


def test_a_killed_run_on_azure_is_resumed_exactly(azure, tiny_model, tmp_path):
    """The killed run's workers commit 3 shards, then hold every later marker, so the kill lands at the same point
    however fast the machine is."""
    fs, container = azure
    images = _images(tmp_path / "photos", 8)
    out = f"az://{container}/out"
    faults = tmp_path / "faults"
    faults.mkdir()
    command = _command(tiny_model, tmp_path / "photos", out)
    held = child_env(_env(), "held_commits", str(faults), CAPTIONER_TEST_COMMITS="3")
    victim = subprocess.Popen(command, env=held, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240  # a bound for a broken run only: the held markers decide when
    while len(list(faults.glob("ticket-*"))) <= 3 or len(state.committed(out)) < 3:
        assert victim.poll() is None and time.monotonic() < deadline, "the run never reached its fourth shard"
        time.sleep(0.2)
    kill_session(victim.pid)
    victim.wait()
    assert len(state.committed(out)) == 3
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "captioned       2" in rerun.stdout  # 8 images, 3 shards of 2 committed before the kill
    assert _rows(fs, container) == sorted((str(p), "en") for p in images)


def test_of_two_runs_started_together_on_azure_exactly_one_writes_and_a_rerun_writes_nothing(azure, tiny_model,
                                                                                            tmp_path):
    fs, container = azure
    images = _images(tmp_path / "photos", 6)
    command = _command(tiny_model, tmp_path / "photos", f"az://{container}/out")
    runs = [subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    codes = sorted(run.returncode for run in runs)
    wrote = [out for out, _ in outputs if "captioned       6" in out]
    assert len(wrote) == 1, outputs
    # the other was refused while the first held the lease, or came after it and found nothing left to do
    other = next((out, err) for out, err in outputs if "captioned       6" not in out)
    assert (codes == [0, 2] and "is writing to this output" in other[1]) or "captioned       0" in other[0]
    assert f"az://{container}/out/captions/" in wrote[0]
    again = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "captioned       0" in again.stdout and "already done    6" in again.stdout
    assert _rows(fs, container) == sorted((str(p), "en") for p in images)
    records = [p for p in fs.find(f"{container}/out/runs") if p.endswith("run.json")]
    logged = "".join(out + err for out, err in outputs) + again.stdout + again.stderr
    assert "AccountKey" not in logged + "".join(fs.cat_file(p).decode() for p in records)  # no credential anywhere
