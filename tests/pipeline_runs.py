"""What the end-to-end tests of the pipeline share: a run's settings with the tiny model, and its output read back."""

import pyarrow.dataset as pads

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig


def run_config(tiny_model, input_uri, output, endpoint=None, **kwargs):
    kwargs.setdefault("generation", GenerationConfig(max_new_tokens=6))
    return RunConfig(
        input=InputConfig(input_uri),
        output=output,
        model=ModelConfig(name=str(tiny_model)),
        storage=StorageConfig(endpoint_url=endpoint),
        **kwargs,
    )


def read_captions(output, filesystem=None):
    table = pads.dataset(output + "/captions", format="parquet", partitioning="hive", filesystem=filesystem).to_table()
    return {(r["uri"], r["lang"]): r for r in table.to_pylist()}


def read_errors(output, filesystem=None):
    return pads.dataset(output + "/errors", format="parquet", filesystem=filesystem).to_table().to_pylist()


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``, as if the machine went down."""
    import os
    import signal
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getsid(int(proc.name)) == sid:
                    os.kill(int(proc.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
