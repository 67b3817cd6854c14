"""Joining the Ray cluster, or starting a local one, without the notices that say nothing to act on."""

import logging
import os
import sys

import ray

log = logging.getLogger(__name__)

# Ray's notices that say nothing to act on: its progress bars are off (the run shows its own), a dataset's
# "execution finished" (the run's summary follows); on a local cluster this run starts, also the notice that
# the cluster made itself an auth token (a cluster joined through RAY_ADDRESS keeps it).
QUIET_RAY_LOGGERS = {"ray.data._internal.progress": logging.ERROR,
                     "ray.data._internal.execution.streaming_executor": logging.WARNING}
QUIET_LOCAL_RAY_LOGGERS = {"ray._private.authentication.authentication_token_setup": logging.ERROR}


def connect() -> None:
    """Join the cluster in RAY_ADDRESS if set, else start a local one, without Ray's notices that say nothing to
    act on (-v keeps them); Ray Data's own progress bars are off, the run shows its own."""
    if not ray.is_initialized():
        local = os.environ.get("RAY_ADDRESS", "local") in ("", "local")
        if not log.isEnabledFor(logging.DEBUG):
            for name, level in {**QUIET_RAY_LOGGERS, **(QUIET_LOCAL_RAY_LOGGERS if local else {})}.items():
                logging.getLogger(name).setLevel(level)
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING, log_to_driver=True)
        if not log.isEnabledFor(logging.DEBUG):
            _spend_actor_argument_warning()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.raise_original_map_exception = True  # so the caption actor's CaptionFailed reaches the driver as itself
    # Ray Data's second Parquet reader starts 32 footer-reading actors per read and kills them after, some still
    # being placed (the GCS then logs an error line), 2 s of every run; the first reader needs no actor.
    ctx.use_datasource_v2 = False


@ray.remote(num_cpus=0, max_restarts=1)
class _Throwaway:
    def __init__(self, _: object) -> None:
        pass


def _spend_actor_argument_warning() -> None:
    """Ray's core prints once per process an error-looking line when it creates a restartable actor whose
    constructor arguments sit in the object store. Every Ray Data actor does (its transformer is put there and
    held for the whole run, so restarts are safe): spend that one line on a throwaway actor, stderr muted."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        actor = _Throwaway.remote(ray.put(None))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    ray.get(actor.__ray_ready__.remote())  # a kill while it is still being placed makes the GCS log an error
    ray.kill(actor)
