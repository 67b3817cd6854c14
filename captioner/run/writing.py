"""The write stage: one shard of results per batch, in a task that imports no model code (nor torch)."""

import pyarrow as pa

from ..config import StorageConfig
from ..store import writer
from .reading import retried


def write(batch: pa.Table, output: str, store: StorageConfig) -> pa.Table:
    """Write one shard and hand its counts back to the driver for progress and the summary.

    A failed PUT is tried again (shard names are deterministic, so a retry replaces its own files)."""
    counts = retried(lambda: writer.write_shard(batch, output, store.options(output)), retry_on=(OSError,), give_up=())
    return pa.Table.from_pylist([counts])
