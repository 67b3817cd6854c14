"""Faults injected into Ray's worker processes through ``worker_process_setup_hook`` (real Ray, no GPU).

CAPTIONER_TEST_FAULTS names a folder shared with the test; each injected failure (or held commit) leaves a file
there. ``caption_faults`` makes the caption actor fail as the test's ``mode`` file says; ``held_commits`` stops a
run at a known shard; ``with_setup_hook`` brings a hook into a Ray that a child process starts itself (through
RAY_RUNTIME_ENV_HOOK).
"""

import os
import uuid


def caption_faults() -> None:
    """Make CaptionActor's model calls fail as the test asks, by the ``mode`` file in the folder (read at each
    call, so one Ray serves every test): ``cuda_once`` or ``cuda_always``, a CUDA-like error as a broken CUDA
    context gives, once in the run or always; ``kill_third``, a SIGKILL of the actor's process as the run's
    third batch starts, as the kernel's OOM killer would. No file, no fault."""
    import signal

    import torch

    from captioner.run import stages

    folder = os.environ["CAPTIONER_TEST_FAULTS"]
    describe = stages.CaptionActor._describe

    def faulty(self, batch, rows):
        try:
            with open(os.path.join(folder, "mode")) as f:
                mode = f.read()
        except FileNotFoundError:
            mode = ""
        failed = [name for name in os.listdir(folder) if name.startswith("fault-")]
        if mode == "cuda_always" or (mode == "cuda_once" and not failed):
            open(os.path.join(folder, f"fault-{uuid.uuid4().hex}"), "w").close()
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        if mode == "kill_third" and _ticket(folder) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return describe(self, batch, rows)

    stages.CaptionActor._describe = faulty


def child_env(env: dict, hook: str, folder: str, **settings: str) -> dict:
    """``env`` for a child process that starts its own Ray, whose workers then run ``hook`` of this module."""
    tests = os.path.dirname(os.path.abspath(__file__))
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, (tests, env.get("PYTHONPATH")))),
            "RAY_RUNTIME_ENV_HOOK": "faults.with_setup_hook", "CAPTIONER_TEST_SETUP_HOOK": f"faults.{hook}",
            "CAPTIONER_TEST_FAULTS": folder, **settings}


def with_setup_hook(runtime_env: dict | None) -> dict:
    """RAY_RUNTIME_ENV_HOOK for a job started in a child process: its workers, on whatever node, run
    CAPTIONER_TEST_SETUP_HOOK with the job's CAPTIONER_TEST_* settings."""
    runtime_env = runtime_env or {}
    settings = {k: v for k, v in os.environ.items() if k.startswith("CAPTIONER_TEST_")}
    return {**runtime_env, "worker_process_setup_hook": os.environ["CAPTIONER_TEST_SETUP_HOOK"],
            "env_vars": {**runtime_env.get("env_vars", {}), "PYTHONPATH": os.path.dirname(os.path.abspath(__file__)),
                         **settings}}


def _ticket(folder: str) -> int:
    """The next number of a count shared by every process of the run (exclusive creates never hand one out twice)."""
    number = 0
    while True:
        try:
            os.close(os.open(os.path.join(folder, f"ticket-{number:06d}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return number
        except FileExistsError:
            number += 1


def held_commits() -> None:
    """Let the first CAPTIONER_TEST_COMMITS shards commit; every later one writes its files, then waits before its
    marker until the test creates ``release`` in the folder, so the test knows exactly how far the run got when it
    kills the run or a node."""
    import time

    from captioner.store import writer

    folder, allowed = os.environ["CAPTIONER_TEST_FAULTS"], int(os.environ["CAPTIONER_TEST_COMMITS"])
    commit = writer.commit

    def held(output, shard, options=None):
        if _ticket(folder) >= allowed:
            while not os.path.exists(os.path.join(folder, "release")):
                time.sleep(0.05)
        commit(output, shard, options)

    writer.commit = held
