"""The job on a multi-node Ray cluster (simulated on this machine) and the cluster configs under cluster/."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from captioner import schema
from conftest import free_port, jpeg_bytes


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_losing_a_worker_node_mid_run_loses_and_doubles_nothing(tiny_model, tmp_path):
    """A head, a CPU worker and a worker declaring a GPU (caption actors must go there); the CPU worker dies
    while the job runs. Ray retries its decode and write tasks elsewhere; every image is written exactly once.
    The job's workers commit one shard, then hold every later marker until the node is gone, so the loss lands
    mid-run on any machine."""
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors, list_tasks

    from faults import child_env

    photos, out, faults = tmp_path / "photos", tmp_path / "out", tmp_path / "faults"
    photos.mkdir()
    faults.mkdir()
    images = [photos / f"img{i:03d}.jpg" for i in range(24)]
    for i, path in enumerate(images):
        path.write_bytes(jpeg_bytes(i))
    # A dashboard port of its own: runs in other tests start local Rays with theirs at the default 8265.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True,
                                                            "dashboard_port": free_port()})
    try:
        cpu_worker = cluster.add_node(num_cpus=2)
        gpu_worker = cluster.add_node(num_cpus=1, num_gpus=1)
        cluster.wait_for_nodes()
        env = child_env({**os.environ, "RAY_ADDRESS": cluster.address}, "held_commits", str(faults),
                        CAPTIONER_TEST_COMMITS="1")
        job = subprocess.Popen(
            [sys.executable, str(ROOT / "jobs" / "caption.py"), str(photos), str(out), "--model", str(tiny_model),
             "--batch-size", "2", "--decode-batch-size", "2", "--rows-per-file", "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        commits = out / schema.COMMITS_DIR
        deadline = time.monotonic() + 240  # a bound for a broken job only: the held markers decide when
        while len(list(faults.glob("ticket-*"))) < 2 or not (commits.is_dir() and any(commits.iterdir())):
            assert job.poll() is None and time.monotonic() < deadline, "the job never reached its second shard"
            time.sleep(0.05)
        cluster.remove_node(cpu_worker, allow_graceful=False)
        (faults / "release").touch()
        logs, _ = job.communicate(timeout=300)
        assert job.returncode == 0, logs

        table = pads.dataset(out / schema.CAPTIONS_DIR, format="parquet", partitioning="hive").to_table()
        assert sorted(table[schema.URI].to_pylist()) == [str(path) for path in images]
        assert not (out / schema.ERRORS_DIR).exists() or pads.dataset(out / schema.ERRORS_DIR).count_rows() == 0

        lost_tasks = list_tasks(address=cluster.gcs_address, filters=[("node_id", "=", cpu_worker.node_id)])
        assert lost_tasks, "the removed node ran no task; nothing was tested"
        actors = [actor for actor in list_actors(address=cluster.gcs_address, detail=True)
                  if "CaptionActor" in actor.class_name and actor.node_id]  # MapWorker(MapBatches(CaptionActor))
        assert actors and {actor.node_id for actor in actors} == {gpu_worker.node_id}
    finally:
        cluster.shutdown()


CLUSTER = ROOT / "cluster"


def _yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((CLUSTER / name).read_text())


def _dockerfile_ray_version() -> str:
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        if line.startswith("ARG RAY_VERSION="):
            return line.partition("=")[2]
    raise AssertionError("cluster/Dockerfile pins no RAY_VERSION")


def _pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def _check_kuberay_cluster(spec: dict) -> dict:
    """What every KubeRay cluster of ours must carry; returns the GPU worker group."""
    assert spec["rayVersion"] == _dockerfile_ray_version()
    assert tuple(int(p) for p in spec["rayVersion"].split(".")[:2]) >= (2, 52), "token auth needs Ray 2.52+"
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP", "the dashboard and client ports must not be exposed publicly"
    assert head["rayStartParams"]["num-cpus"] == "0"
    for group in _pods(spec):
        pod = group["template"]["spec"]
        assert pod["serviceAccountName"] == "captioner", "S3 access comes from the platform identity"
        for container in pod["containers"]:
            assert container["image"] == f"REGISTRY/captioner:{__import__('captioner').__version__}"
            assert container["resources"]["requests"] and container["resources"]["limits"]
            names = {env["name"] for env in container.get("env", [])}
            assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
    gpu = [g for g in spec["workerGroupSpecs"]
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    cpu = [g for g in spec["workerGroupSpecs"] if g not in gpu]
    assert len(gpu) == 1 and cpu, "a GPU group for captioning and a CPU group for decoding"
    assert 1 <= gpu[0]["minReplicas"] <= gpu[0]["replicas"] <= gpu[0]["maxReplicas"]
    assert cpu[0]["minReplicas"] <= cpu[0]["maxReplicas"]
    return gpu[0]


def test_kuberay_raycluster():
    doc = _yaml("kuberay/raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    _check_kuberay_cluster(doc["spec"])


def test_kuberay_rayjob_runs_a_valid_captioner_command():
    import shlex

    from captioner.cli import build_parser

    doc = _yaml("kuberay/rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    assert spec["jobId"], "a stable submission id, so a retried submitter attaches instead of starting a writer"
    assert spec["shutdownAfterJobFinishes"] is True
    gpu = _check_kuberay_cluster(spec["rayClusterSpec"])
    python, script, *argv = shlex.split(spec["entrypoint"])
    assert (python, script) == ("python", "/app/jobs/caption.py")
    assert "COPY --chown=ray:users jobs ./jobs" in (CLUSTER / "Dockerfile").read_text()
    args = build_parser().parse_args(["run", *argv])
    assert args.input.startswith("s3://") and args.output.startswith("s3://")
    assert args.concurrency == (gpu["minReplicas"], gpu["maxReplicas"]), "one caption actor per GPU of the group"


def test_ray_up_config():
    doc = _yaml("aws.yaml")
    assert doc["provider"]["type"] == "aws"
    types = doc["available_node_types"]
    assert types[doc["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [t for t in types.values() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu and gpu[0]["min_workers"] >= 1
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values()), "S3 access from instance roles"
    for rule in doc["provider"]["security_group"]["IpPermissions"]:
        assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule["IpRanges"])
    head = " ".join(doc["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in head and "--dashboard-host=127.0.0.1" in head
    assert any("RAY_AUTH_MODE=token ray start --address" in c for c in doc["worker_start_ray_commands"])
    assert doc["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert doc["docker"]["image"] == f"REGISTRY/captioner:{__import__('captioner').__version__}"


def test_no_credentials_in_cluster_files():
    configs = [p for p in CLUSTER.rglob("*") if p.suffix == ".yaml" or p.name.startswith("Dockerfile")]
    assert len(configs) >= 5
    text = "\n".join(p.read_text() for p in configs)
    for secret in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "aws_secret_access_key", "RAY_AUTH_TOKEN=",
                   "BEGIN PRIVATE KEY"):
        assert secret not in text
