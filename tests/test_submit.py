"""`captioner submit` against a real Ray head on 127.0.0.1 (dashboard, Jobs API, token authentication on)."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from captioner import cli, schema, submit
from captioner.config import InputConfig, RunConfig
from conftest import free_port, jpeg_bytes


@pytest.fixture(scope="module")
def ray_head(s3_server):
    """A Ray head started as a cluster is: `ray start --head --block`, token auth on, the store's credentials in its
    environment as an instance role would give them. Stopped by its process group, so other Rays live on."""
    token = uuid.uuid4().hex
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # socket paths must stay short
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp_dir}",
         # Ports of its own, so another Ray on this machine (a test's, a developer's) cannot collide with it.
         *(f"--{name}={free_port()}" for name in ("ray-client-server-port", "dashboard-agent-listen-port",
                                                   "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                   "metrics-export-port", "node-manager-port",
                                                   "object-manager-port"))],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_jobs_api(address, token)
        yield address, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(address: str, token: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture
def as_client(monkeypatch, tmp_path):
    """This machine as a user's laptop: a home without Ray's token file, the token only where we put it."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _photos(s3, n: int) -> str:
    fs, bucket = s3
    for i in range(n):
        fs.pipe(f"{bucket}/in/img{i}.jpg", jpeg_bytes(i))
    return bucket


def _args(address: str, bucket: str, out: str, tiny_model, s3_server, *extra: str) -> list[str]:
    return ["submit", "--address", address, f"s3://{bucket}/in", f"s3://{bucket}/{out}", "--model", str(tiny_model),
            "--endpoint-url", s3_server, "--rows-per-file", "2", *extra]  # this checkout is the working dir


def _rows(fs, bucket: str, out: str) -> list[tuple[str, str]]:
    table = pads.dataset(f"{bucket}/{out}/{schema.CAPTIONS_DIR}", filesystem=fs, format="parquet").to_table()
    return sorted(zip(table[schema.URI].to_pylist(), table[schema.CAPTION].to_pylist()))


@pytest.mark.slow
def test_submit_wait_runs_the_job_and_resubmitting_resumes(ray_head, as_client, tiny_model, s3, s3_server, capsys):
    address, token = ray_head
    fs, _ = s3
    bucket = _photos(s3, 6)
    as_client.setenv("RAY_AUTH_TOKEN", token)

    assert cli.main([*_args(address, bucket, "out", tiny_model, s3_server), "--wait"]) == 0
    first = _rows(fs, bucket, "out")
    assert [uri for uri, _ in first] == [f"s3://{bucket}/in/img{i}.jpg" for i in range(6)]
    assert "captioned       6" in capsys.readouterr().out  # the job's own summary, followed from its logs

    assert cli.main([*_args(address, bucket, "out", tiny_model, s3_server), "--wait"]) == 0
    logs = capsys.readouterr().out
    assert "already done    6" in logs and "captioned       0" in logs
    assert _rows(fs, bucket, "out") == first


@pytest.mark.slow
def test_same_run_attaches_and_another_run_on_the_output_is_refused(ray_head, as_client, tiny_model, s3, s3_server,
                                                                   caplog):
    from ray.job_submission import JobSubmissionClient

    caplog.set_level(logging.INFO)
    address, token = ray_head
    fs, _ = s3
    bucket = _photos(s3, 4)
    as_client.setenv("RAY_AUTH_TOKEN", token)
    args = _args(address, bucket, "out", tiny_model, s3_server)

    assert cli.main(args) == 0
    assert cli.main(args) == 0
    assert "attaching instead of starting a second writer" in caplog.text
    assert cli.main([*args, "--max-new-tokens", "5"]) == 2
    assert "with other settings" in caplog.text
    assert cli.main([*args, "--wait"]) == 0

    client = JobSubmissionClient(address, headers=submit.auth_headers())
    config = RunConfig(input=InputConfig(uri=f"s3://{bucket}/in"), output=f"s3://{bucket}/out")
    output_key, _ = submit.run_key(config)
    mine = [job for job in client.list_jobs() if job.submission_id.startswith(f"captioner-{output_key}-")]
    assert [job.status for job in mine] == ["SUCCEEDED"]
    assert len(_rows(fs, bucket, "out")) == 4


@pytest.mark.slow
def test_wait_exits_with_the_status_of_a_failed_job(ray_head, as_client, tiny_model, s3, s3_server, caplog):
    caplog.set_level(logging.INFO)
    address, token = ray_head
    fs, _ = s3
    bucket = _photos(s3, 2)
    fs.pipe(f"{bucket}/in/broken.jpg", b"not an image")
    as_client.setenv("RAY_AUTH_TOKEN", token)
    assert cli.main([*_args(address, bucket, "out", tiny_model, s3_server), "--max-error-rate", "0", "--wait"]) == 1
    assert "FAILED" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_submission_without_the_token_is_refused(ray_head, as_client, tiny_model, s3, s3_server, caplog, token):
    address, _ = ray_head
    bucket = _photos(s3, 1)
    if token:
        as_client.setenv("RAY_AUTH_TOKEN", token)
    assert cli.main(_args(address, bucket, "out", tiny_model, s3_server)) == 2
    assert "token authentication" in caplog.text
    fs, _ = s3
    assert not fs.exists(f"{bucket}/out")


def test_unreachable_dashboard_says_so(as_client, tiny_model, caplog):
    address = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["submit", "--address", address, "s3://b/in", "s3://b/out", "--model", str(tiny_model)]) == 2
    assert f"cannot reach the Ray dashboard at {address}" in caplog.text


def test_address_is_required(as_client, caplog):
    assert cli.main(["submit", "s3://b/in", "s3://b/out"]) == 2
    assert "--address is required" in caplog.text


def test_submission_id_follows_output_and_settings():
    base = RunConfig(input=InputConfig(uri="s3://b/in"), output="s3://b/out")
    same = RunConfig(input=InputConfig(uri="s3://b/in"), output="s3://b/out/")
    other_output = RunConfig(input=InputConfig(uri="s3://b/in"), output="s3://b/elsewhere")
    other_settings = RunConfig(input=InputConfig(uri="s3://b/in"), output="s3://b/out", languages=("en", "fr"))
    assert submit.run_key(base) == submit.run_key(same)
    assert submit.run_key(other_output)[0] != submit.run_key(base)[0]
    assert submit.run_key(other_settings) == (submit.run_key(base)[0], submit.run_key(other_settings)[1])
    assert submit.run_key(other_settings)[1] != submit.run_key(base)[1]


def test_token_is_read_where_ray_keeps_it(as_client, tmp_path):
    assert submit.auth_headers() == {}
    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text("from-file\n")
    assert submit.auth_headers() == {"Authorization": "Bearer from-file"}
    as_client.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.auth_headers() == {"Authorization": "Bearer from-env"}
    as_client.setenv("RAY_AUTH_MODE", "disabled")
    assert submit.auth_headers() == {}
