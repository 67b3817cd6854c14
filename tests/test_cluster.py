"""The job on a multi-node Ray cluster (simulated on this machine) and the cluster configs under cluster/."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from captioner import schema
from conftest import jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_losing_a_worker_node_mid_run_loses_and_doubles_nothing(tiny_model, tmp_path):
    """A head, a CPU worker and a worker declaring a GPU (caption actors must go there); the CPU worker dies
    while the job runs. Ray retries its decode and write tasks elsewhere; every image is written exactly once."""
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors, list_tasks

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    images = 96
    for i in range(images):
        (photos / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(i))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True})
    try:
        cpu_worker = cluster.add_node(num_cpus=2)
        gpu_worker = cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        job = subprocess.Popen(
            [sys.executable, str(ROOT / "jobs" / "caption.py"), str(photos), str(out), "--model", str(tiny_model),
             "--batch-size", "2", "--decode-batch-size", "2", "--rows-per-file", "2"],
            env={**os.environ, "RAY_ADDRESS": cluster.address}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        commits = out / schema.COMMITS_DIR
        deadline = time.monotonic() + 240
        while not (commits.is_dir() and any(commits.iterdir())) and job.poll() is None:
            assert time.monotonic() < deadline, "the job committed nothing in 4 minutes"
            time.sleep(0.1)
        committed_at_loss = len(list(commits.iterdir()))
        cluster.remove_node(cpu_worker, allow_graceful=False)
        logs, _ = job.communicate(timeout=300)
        assert job.returncode == 0, logs
        assert committed_at_loss < images // 2, "the node was lost after the job had finished; nothing was tested"

        table = pads.dataset(out / schema.CAPTIONS_DIR, format="parquet", partitioning="hive").to_table()
        uris = table[schema.URI].to_pylist()
        assert sorted(uris) == sorted(str(photos / f"img{i:03d}.jpg") for i in range(images))
        assert not (out / schema.ERRORS_DIR).exists() or pads.dataset(out / schema.ERRORS_DIR).count_rows() == 0

        lost_tasks = list_tasks(address=cluster.gcs_address, filters=[("node_id", "=", cpu_worker.node_id)])
        assert lost_tasks, "the removed node ran no task; nothing was tested"
        actors = [actor for actor in list_actors(address=cluster.gcs_address, detail=True)
                  if "CaptionActor" in actor.class_name and actor.node_id]  # MapWorker(MapBatches(CaptionActor))
        assert actors and {actor.node_id for actor in actors} == {gpu_worker.node_id}
    finally:
        cluster.shutdown()
