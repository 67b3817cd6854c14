"""Submitting a run to a Ray cluster through the Job Submission API, once per run.

The submission id is derived from the run, so submitting the same run again attaches to the job that is
already writing instead of starting a second writer; a different run on the same output is refused while one
runs. After a job ends, the same command submits the next attempt, which resumes where the last one stopped.
"""

import asyncio
import hashlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ray.exceptions import AuthenticationError

from .config import ConfigError, RunConfig, UserError
from .fingerprint import fingerprint
from .store.fs import redact

log = logging.getLogger(__name__)

ID_PREFIX = "captioner"
ENTRYPOINT = "jobs/caption.py"
# Never uploaded with the working directory: environments, caches and outputs of local runs.
EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "build", "dist", "*.egg-info",
            "demo-out", "bench-out", "test-artifacts"]
POLL_S = 1.0
RETRY_5XX_S = 60.0  # how long a head answering server errors is retried before giving up


class SubmitError(UserError, RuntimeError):
    """The cluster could not take the job; the message says what to do."""


def project_dir() -> Path:
    """The checkout this package runs from: it holds ``jobs/caption.py`` and is uploaded as the job's working dir."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ENTRYPOINT).is_file():
        raise ConfigError(f"{root} holds no {ENTRYPOINT} (captioner is installed without its project files); "
                          "pass --working-dir pointing at a checkout of captioner")
    return root


def run_key(config: RunConfig) -> tuple[str, str]:
    """(output key, settings key): short hashes of where a run writes and of what it writes there."""
    output = hashlib.sha256(config.output.rstrip("/").encode()).hexdigest()[:10]
    settings = hashlib.sha256("\n".join([config.input.uri, fingerprint(config), config.mode]).encode()).hexdigest()
    return output, settings[:8]


def auth_headers() -> dict[str, str]:
    """The bearer token of a cluster with token authentication, from where Ray's own tools look for it:
    RAY_AUTH_TOKEN, the file in RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token. None is sent when RAY_AUTH_MODE is
    ``disabled``."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def submit(address: str, config: RunConfig, run_argv: Sequence[str], *, wait: bool,
           working_dir: str | None = None, verbose: bool = False) -> int:
    """Submit (or attach to) the job of this run; with ``wait``, follow its logs and return its exit status."""
    from ray.job_submission import JobSubmissionClient

    for label, uri in (("INPUT", config.input.uri), ("OUTPUT", config.output)):
        if "://" not in uri:
            log.warning("%s %r is a path on the cluster's nodes, not on this machine; use an object-store URL "
                        "such as s3://bucket/prefix unless every node mounts it", label, uri)
    client = _call(address, lambda: JobSubmissionClient(address, headers=auth_headers()))
    output_key, settings_key = run_key(config)
    prefix = f"{ID_PREFIX}-{output_key}-"
    earlier = [job for job in _call(address, client.list_jobs) if (job.submission_id or "").startswith(prefix)]
    running = [job for job in earlier if not job.status.is_terminal()]
    if running:
        job = running[0]
        if not job.submission_id.startswith(f"{prefix}{settings_key}-"):
            raise SubmitError(f"job {job.submission_id} ({job.status}) is writing to {config.output} with other "
                              f"settings; wait for it, or stop it with: ray job stop --address {address} "
                              f"{job.submission_id}")
        job_id = job.submission_id
        log.info("this run is already job %s (%s); attaching instead of starting a second writer", job_id, job.status)
    else:
        job_id = f"{prefix}{settings_key}-{len(earlier) + 1}"
        entrypoint = shlex.join(["python", ENTRYPOINT, *(["-v"] if verbose else []), *run_argv])
        runtime_env = {"working_dir": str(working_dir or project_dir()), "excludes": EXCLUDES}
        try:
            _call(address, lambda: client.submit_job(entrypoint=entrypoint, submission_id=job_id,
                                                     runtime_env=runtime_env,
                                                     metadata={"captioner_output": redact(config.output)}))
            log.info("submitted job %s to %s", job_id, address)
        except SubmitError:
            if not _exists(client, job_id):
                raise
            log.info("job %s was submitted at the same moment by another command; attaching", job_id)
    if not wait:
        log.info("follow it with: ray job logs --follow --address %s %s (or rerun this command with --wait)",
                 address, job_id)
        return 0
    return follow(client, job_id)


def follow(client, job_id: str) -> int:
    """Stream the job's logs to standard output until it ends; its exit status becomes ours."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
        while not (info := client.get_job_info(job_id)).status.is_terminal():
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        log.warning("stopped following; job %s keeps running (ray job stop %s stops it)", job_id, job_id)
        return 130
    log.info("job %s %s%s", job_id, info.status, f": {info.message}" if info.message else "")
    if info.status == "SUCCEEDED":
        return 0
    return info.driver_exit_code or 1


def _exists(client, job_id: str) -> bool:
    try:
        client.get_job_info(job_id)
    except RuntimeError:
        return False
    return True


def _call(address: str, request):
    """One request to the cluster, retried while the head answers 5xx (its job agent still starting or busy), with
    refusals turned into messages that say what to do. Retrying a submission is safe: its id is fixed."""
    deadline = time.monotonic() + RETRY_5XX_S
    delay = 1.0
    while True:
        try:
            return _call_once(address, request)
        except SubmitError as exc:
            if "status code 5" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s; retrying in %.0f s", exc, delay)
            time.sleep(delay)
            delay = min(2 * delay, 8.0)


def _call_once(address: str, request):
    try:
        return request()
    except ConnectionError as exc:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {exc}. Check the address (the head's "
                          "port 8265, e.g. through `kubectl port-forward` or `ray dashboard`)") from None
    except AuthenticationError as exc:
        raise SubmitError(f"the cluster at {address} refused the request ({exc}): it has token authentication on "
                          "and this machine sent no valid token. Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the "
                          "cluster's token; `ray get-auth-token` on the head prints it") from None
    except RuntimeError as exc:
        raise SubmitError(f"the cluster at {address} refused the request: {exc}") from None
