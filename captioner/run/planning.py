"""What a run has to do: the listing minus what OUTPUT holds; and that plan counted, for ``--dry-run``."""

import collections
from dataclasses import dataclass, replace

import pyarrow as pa

from .. import schema
from ..config import RunConfig
from ..fingerprint import fingerprints
from ..store import manifest, state


@dataclass(frozen=True)
class Plan:
    """What a run would do now, as ``captioner run --dry-run`` prints it."""

    listed: int  # files in the input
    done: int  # every requested language already written with these settings
    failed_for_good: int  # failed before for a reason a rerun would not change; tried again only with --retry-errors
    todo: int  # files a run would read and caption
    per_language: dict[str, int]  # of those, how many still need each language
    shards: int  # output shards a run would commit (at least; a video's segments may add more)


def plan(config: RunConfig, listing: pa.Table, shards: list[state.Shard]) -> pa.Table:
    """The listing minus what committed shards hold: captions made with these settings, and errors."""
    opts = config.storage.options(config.output)
    captions = state.captions(config.output, shards, opts, fingerprints(config))
    captioned = captions.to_table(columns=[*schema.IDENTITY, schema.LANG, schema.SEGMENT, schema.SEGMENTS])
    failed = state.errors(config.output, shards, opts).to_table(
        columns=[*schema.IDENTITY, schema.ERROR_TYPE, schema.ATTEMPT, schema.SEGMENT])
    todo = manifest.pending(listing, captioned, failed, config.languages, config.retry_errors)
    if config.translate:
        todo = manifest.with_source_captions(todo, captions, config.source_language)
    return manifest.with_stored_segments(todo, captions, failed, config.retry_errors)


def count(config: RunConfig, listing: pa.Table, shards: list[state.Shard]) -> Plan:
    """The plan of a run, counted: planned twice, with and without retrying errors, to tell done from failed."""
    todo = plan(config, listing, shards)
    retrying = todo if config.retry_errors else plan(replace(config, retry_errors=True), listing, shards)
    langs = collections.Counter(lang for value in todo[schema.LANGS].to_pylist() for lang in value.split(","))
    return Plan(listed=listing.num_rows, done=listing.num_rows - retrying.num_rows,
                failed_for_good=retrying.num_rows - todo.num_rows, todo=todo.num_rows,
                per_language=dict(sorted(langs.items())), shards=-(-todo.num_rows // config.resources.rows_per_file))


def mixed_settings_message(config: RunConfig, others: dict[str, set[str]]) -> str:
    found = "; ".join(sorted(others)[:4])
    return (
        f"{config.output} holds captions made with other settings (language:settings hash): {found}. This run's "
        f"are {', '.join(f'{k}:{v}' for k, v in fingerprints(config).items())}. Rerun with the same settings to "
        "resume, or pass --mode append to add these captions alongside, or --mode overwrite to replace the old "
        "ones once this run has finished"
    )
