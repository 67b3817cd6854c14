"""What a run has to do: the frozen manifest minus what OUTPUT holds; that plan written as Parquet parts for Ray
Data to read, or counted for ``--dry-run``."""

from dataclasses import dataclass

from ..config import RunConfig
from ..fingerprint import fingerprints
from ..store import fs as storage
from ..store import manifest, state
from ..store.todo import Todo


@dataclass(frozen=True)
class Plan:
    """What a run would do now, as ``captioner run --dry-run`` prints it."""

    listed: int  # files in the input
    done: int  # every requested language already written with these settings
    failed_for_good: int  # failed before for a reason a rerun would not change; tried again only with --retry-errors
    todo: int  # files a run would read and caption
    per_language: dict[str, int]  # of those, how many still need each language
    shards: int  # output shards a run would commit (at least; a video's segments may add more)


def plan(config: RunConfig, listing: str, shards: list[state.Shard], retry_errors: bool | None = None) -> Todo:
    """The manifest under the folder ``listing`` minus what committed shards hold: captions made with these
    settings, and errors. Close it (or use it as a context manager) to drop its scratch files."""
    opts = config.storage.options(config.output)
    return Todo(
        manifest.dataset(listing, config.storage.options(listing)),
        state.captions(config.output, shards, opts, fingerprints(config)),
        state.errors(config.output, shards, opts),
        config.languages,
        config.retry_errors if retry_errors is None else retry_errors,
        config.source_language if config.translate else None,
    )


def write(todo: Todo, dest: str, rows_per_part: int, options: dict | None = None) -> int:
    """The to-do rows as Parquet parts of ``rows_per_part`` rows under ``dest``, each one input block of the
    run; returns how many parts."""
    parts = 0
    for parts, table in enumerate(todo.batches(rows_per_part), start=1):
        storage.write_parquet_atomic(storage.join(dest, f"part-{parts - 1:06d}.parquet"), table, options)
    return parts


def count(config: RunConfig, listing: str, listed: int, shards: list[state.Shard]) -> Plan:
    """The plan of a run, counted: planned twice, one after the other, with and without retrying errors, to tell
    done from failed."""
    with plan(config, listing, shards, retry_errors=True) as retrying:
        again = retrying.rows
    with plan(config, listing, shards) as todo:
        return Plan(listed=listed, done=listed - again, failed_for_good=again - todo.rows, todo=todo.rows,
                    per_language=todo.per_language(), shards=-(-todo.rows // config.resources.rows_per_file))


def mixed_settings_message(config: RunConfig, others: dict[str, set[str]]) -> str:
    found = "; ".join(sorted(others)[:4])
    return (
        f"{config.output} holds captions made with other settings (language:settings hash): {found}. This run's "
        f"are {', '.join(f'{k}:{v}' for k, v in fingerprints(config).items())}. Rerun with the same settings to "
        "resume, or pass --mode append to add these captions alongside, or --mode overwrite to replace the old "
        "ones once this run has finished"
    )
