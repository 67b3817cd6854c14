"""Faults on real Ray: a caption actor whose device fails is restarted and retries its batch, one that fails every
time fails the run without an error row per image, one killed mid-run loses and doubles nothing; two runs racing
for one S3 output through a slow store; a rerun after a torn commit."""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import ray

from captioner.config import GenerationConfig, InputConfig, ModelConfig, ResourceConfig, RunConfig, StorageConfig
from captioner.run import pipeline
from captioner.run.summary import RunFailed
from captioner.store import state
from captioner.store.lease import OutputBusy
from conftest import BAD, GOOD, jpeg_bytes, start_local_ray

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faulty_ray_module(s3_server, tmp_path_factory):
    """One Ray of its own for this module, whose caption actors fail as each test's ``mode`` file asks
    (``faults.caption_faults``); the suite's Ray is back after it."""
    shared = ray.is_initialized()
    if shared:
        ray.shutdown()
    folder = tmp_path_factory.mktemp("faults")
    start_local_ray(runtime_env={"worker_process_setup_hook": "faults.caption_faults",
                                 "env_vars": {"PYTHONPATH": str(TESTS), "CAPTIONER_TEST_FAULTS": str(folder)}})
    yield folder
    ray.shutdown()
    if shared:
        start_local_ray()


@pytest.fixture
def faulty_ray(faulty_ray_module, request):
    """The module's Ray with the fault of ``request.param`` (none without one), and the folder that records it."""
    for path in faulty_ray_module.iterdir():
        path.unlink()
    mode = getattr(request, "param", "")
    if mode:
        (faulty_ray_module / "mode").write_text(mode)
    yield faulty_ray_module
    for path in faulty_ray_module.iterdir():
        path.unlink()


def _config(tiny_model, image_folder, out):
    return RunConfig(input=InputConfig(str(image_folder)), output=str(out), model=ModelConfig(name=str(tiny_model)),
                     generation=GenerationConfig(max_new_tokens=4))


@pytest.mark.parametrize("faulty_ray", ["cuda_once"], indirect=True)
def test_an_actor_whose_device_fails_is_restarted_and_its_batch_retried(faulty_ray, tiny_model, image_folder,
                                                                        tmp_path):
    out = tmp_path / "out"
    summary = pipeline.run(_config(tiny_model, image_folder, out))
    assert len(list(faulty_ray.glob("fault-*"))) == 1  # it failed once, in the first actor
    assert (summary.status, summary.captioned, summary.failed) == ("succeeded", GOOD, len(BAD))
    errors = state.errors(str(out), state.committed(str(out))).to_table().to_pylist()
    assert sorted(e["error_type"] for e in errors) == sorted(BAD.values())  # no caption_error rows


@pytest.mark.parametrize("faulty_ray", ["cuda_always"], indirect=True)
def test_a_device_that_fails_every_batch_fails_the_run_without_error_rows(faulty_ray, tiny_model, image_folder,
                                                                         tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RunFailed, match="the model cannot caption: the device fails again after a restart"):
        pipeline.run(_config(tiny_model, image_folder, out))
    assert len(list(faulty_ray.glob("fault-*"))) == 2  # its first life, then the restarted actor's retry
    assert state.committed(str(out)) == []  # no error row for images the model never saw


@pytest.mark.parametrize("faulty_ray", ["kill_third"], indirect=True)
def test_a_caption_actor_killed_mid_run_loses_and_doubles_nothing(faulty_ray, tiny_model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(12):
        (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(i))
    config = replace(_config(tiny_model, folder, tmp_path / "out"),
                     resources=ResourceConfig(batch_size=2, decode_batch_size=2, rows_per_file=2))
    summary = pipeline.run(config)
    assert (faulty_ray / "ticket-000002").exists(), "the actor never reached a third batch; nothing was killed"
    assert (summary.status, summary.captioned, summary.failed) == ("succeeded", 12, 0)
    assert _exact(str(tmp_path / "out")) == [(str(folder / f"img{i:03d}.jpg"), "en") for i in range(12)]


def _exact(out: str, fs=None) -> list[tuple[str, str]]:
    """Every (uri, lang) of the Parquet under OUTPUT, read without the markers; asserts none is there twice."""
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive", filesystem=fs).to_table()
    pairs = list(zip(table["uri"].to_pylist(), table["lang"].to_pylist()))
    assert len(pairs) == len(set(pairs)), "a row was written twice"
    return sorted(pairs)


def test_of_two_runs_racing_for_an_s3_output_exactly_one_writes(faulty_ray, tiny_model, image_folder, s3, s3_server,
                                                                faulty_s3):
    fs, bucket = s3
    out = f"s3://{bucket}/out"
    gate = faulty_s3.hold("PUT", "_lease.json")  # the late run's lease write: held back, as a slow store would
    late = replace(_config(tiny_model, image_folder, out), storage=StorageConfig(endpoint_url=faulty_s3.url))
    outcome: dict = {}

    def run_late() -> None:
        try:
            outcome["late"] = pipeline.run(late)
        except OutputBusy as exc:
            outcome["late"] = exc

    thread = threading.Thread(target=run_late)
    thread.start()
    assert gate.reached.wait(120)

    def open_once_taken() -> None:  # let the late write through while the first run holds the lease
        while not fs.exists(f"{bucket}/out/_lease.json"):
            time.sleep(0.05)
        gate.open()

    threading.Thread(target=open_once_taken, daemon=True).start()
    first = pipeline.run(replace(late, storage=StorageConfig(endpoint_url=s3_server)))
    thread.join(120)
    assert isinstance(outcome["late"], OutputBusy) and first.run_id in str(outcome["late"])
    assert first.captioned == GOOD
    assert len(_exact(f"{bucket}/out", fs)) == GOOD  # every image once, by one writer


def test_a_rerun_is_exact_after_a_torn_commit_an_orphan_and_a_write_left_in_flight(faulty_ray, tiny_model,
                                                                                  image_folder, tmp_path):
    out = tmp_path / "out"
    pipeline.run(_config(tiny_model, image_folder, out))
    marker = next((out / "_commits").glob("*.json"))
    shard = json.loads(marker.read_text())
    torn = out / shard["files"][0]
    orphan = torn.with_name("part-" + "1" * 24 + ".parquet")  # a file whose marker never landed
    orphan.write_bytes(torn.read_bytes())
    torn.unlink()  # a file cleaned up before its late marker landed
    (out / "_inflight" / "dead-run").mkdir(parents=True)
    (out / "_inflight" / "dead-run" / "part-x.json").write_text("{}")
    again = pipeline.run(_config(tiny_model, image_folder, out))
    assert again.captioned == shard["counts"]["captioned"]  # the torn shard's images, done again
    assert _exact(str(out)) == sorted((str(p), "en") for p in image_folder.rglob("*")
                                      if p.suffix.lower() in (".jpg", ".png") and p.name not in BAD)
    assert not orphan.exists() and not list((out / "_inflight").rglob("*.json"))  # no write left in flight
