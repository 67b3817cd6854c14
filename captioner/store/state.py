"""The state of an output folder: committed shards, orphan clean-up, run records.

A shard is committed when its marker ``_commits/<shard>.json`` exists; the marker is written after the
shard's Parquet files and lists them. Readers and resume see committed shards only, so a crash between
a data file and its marker can never show a row twice; the next run deletes such orphans.
"""

import json
import logging
import posixpath
import re
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .. import schema
from . import fs as storage

log = logging.getLogger(__name__)

_OURS = re.compile(r"^(part-[0-9a-f]{24}\.parquet|\.tmp-.*)$")  # the data files captioner writes


@dataclass(frozen=True)
class Shard:
    """One committed unit of output: the marker's content."""

    name: str
    run_id: str
    files: tuple[str, ...]  # paths relative to OUTPUT
    fingerprints: dict[str, str] = field(default_factory=dict)  # language -> settings hash of its caption file
    counts: dict[str, int] = field(default_factory=dict)  # images, captioned, failed, captions
    errors_by_type: dict[str, int] = field(default_factory=dict)


def commit(output: str, shard: Shard, options: dict | None = None) -> None:
    marker = storage.join(output, schema.COMMITS_DIR, shard.name.replace(".parquet", ".json"))
    storage.write_bytes_atomic(marker, json.dumps(asdict(shard)).encode(), options)


def committed(output: str, options: dict | None = None) -> list[Shard]:
    """Every committed shard, read in one batched request."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.COMMITS_DIR)
    if not fs.exists(folder):
        return []
    paths = sorted(p for p in fs.find(folder) if p.endswith(".json"))
    shards = []
    for data in fs.cat(paths, on_error="raise").values():  # a partial view could delete a committed shard
        record = json.loads(data)
        shards.append(Shard(**{**record, "files": tuple(record["files"])}))
    return shards


def drop_rows(output: str, shards: list[Shard], files: set[str], superseded: pa.Table,
              options: dict | None = None) -> int:
    """Remove from ``files`` the rows whose (uri, lang) is in ``superseded``: rows replaced by newer ones.

    Each file is rewritten atomically without those rows, or taken out of its shard when none are left;
    rows of images the new run did not cover stay. Returns the number of rows removed.
    """
    fs, root = storage.filesystem(output, options)
    removed = 0
    emptied = set()
    for path in sorted(files):
        lang = file_lang(path)
        gone = pc.field(schema.URI).isin(superseded.filter(pc.equal(superseded[schema.LANG], lang))[schema.URI])
        table = pads.dataset(storage.join(root, path), filesystem=fs, format="parquet").to_table()
        kept = table.filter(~gone)
        if kept.num_rows == table.num_rows:
            continue
        removed += table.num_rows - kept.num_rows
        if kept.num_rows:
            storage.write_parquet_atomic(storage.join(output, path), kept, options)
        else:
            emptied.add(path)
    if emptied:
        remove_files(output, shards, emptied, options)
    return removed


def file_lang(path: str) -> str | None:
    """The language of a caption file (``captions/lang=xx/...``); None for error files."""
    parts = path.split("/")
    if parts[0] != schema.CAPTIONS_DIR:
        return None
    return parts[1].removeprefix(f"{schema.LANG}=")


def remove_files(output: str, shards: list[Shard], files: set[str], options: dict | None = None) -> None:
    """Take files out of their shards: each marker is rewritten (or removed) first, then the files go,
    so no reader ever sees a listed file missing."""
    fs, root = storage.filesystem(output, options)
    for shard in shards:
        kept = tuple(f for f in shard.files if f not in files)
        if len(kept) == len(shard.files):
            continue
        if kept:
            langs = {file_lang(f) for f in kept}
            commit(output, Shard(shard.name, shard.run_id, kept, {k: v for k, v in shard.fingerprints.items()
                                                                   if k in langs}, shard.counts,
                                 shard.errors_by_type), options)
        else:
            fs.rm(storage.join(root, schema.COMMITS_DIR, shard.name.replace(".parquet", ".json")))
    fs.rm([storage.join(root, f) for f in sorted(files)])


def remove_orphans(output: str, shards: list[Shard], options: dict | None = None) -> int:
    """Delete data files no marker lists: the leftovers of a run that died between a file and its marker.

    Only files named the way captioner names them are touched, never anything else found under OUTPUT.
    """
    fs, root = storage.filesystem(output, options)
    listed = {f for s in shards for f in s.files}
    orphans = []
    for folder in (schema.CAPTIONS_DIR, schema.ERRORS_DIR):
        base = storage.join(root, folder)
        if fs.exists(base):
            for path in fs.find(base):
                relative = path[len(root.rstrip("/")) + 1:]
                if relative not in listed and _OURS.match(posixpath.basename(path)):
                    orphans.append(path)
    if orphans:
        log.info("removing %d uncommitted files left by an interrupted run", len(orphans))
        fs.rm(orphans)
    return len(orphans)


def _dataset(output: str, files: list[str], file_schema: pa.Schema, options: dict | None, hive: bool) -> pads.Dataset:
    fs, root = storage.filesystem(output, options)
    paths = [storage.join(root, f) for f in files]
    if hive:
        base = storage.join(root, schema.CAPTIONS_DIR)
        return pads.dataset(paths, filesystem=fs, format="parquet", schema=schema.CAPTIONS,
                            partitioning=pads.partitioning(pa.schema([pa.field(schema.LANG, pa.string())]),
                                                           flavor="hive"),
                            partition_base_dir=base)
    return pads.dataset(paths, filesystem=fs, format="parquet", schema=file_schema)


def caption_files(shards: list[Shard], fingerprints: dict[str, str] | None = None) -> list[str]:
    """Committed caption files; with ``fingerprints``, only those of these languages made with these settings."""
    found = []
    for shard in shards:
        for f in shard.files:
            lang = file_lang(f)
            if lang is not None and (fingerprints is None or shard.fingerprints.get(lang) == fingerprints.get(lang)):
                found.append(f)
    return found


def conflicts(shards: list[Shard], fingerprints: dict[str, str]) -> dict[str, set[str]]:
    """Caption files of the given languages made with other settings, by their fingerprint."""
    found: dict[str, set[str]] = {}
    for shard in shards:
        for f in shard.files:
            lang = file_lang(f)
            if lang in fingerprints and shard.fingerprints.get(lang) != fingerprints[lang]:
                found.setdefault(f"{lang}:{shard.fingerprints.get(lang)} (run {shard.run_id})", set()).add(f)
    return found


def captions(output: str, shards: list[Shard], options: dict | None = None,
             fingerprints: dict[str, str] | None = None) -> pads.Dataset:
    """Committed caption rows, with ``lang`` from the partition directories (see ``caption_files``)."""
    return _dataset(output, caption_files(shards, fingerprints), schema.CAPTIONS, options, hive=True)


def errors(output: str, shards: list[Shard], options: dict | None = None) -> pads.Dataset:
    files = [f for s in shards for f in s.files if f.startswith(schema.ERRORS_DIR + "/")]
    return _dataset(output, files, schema.ERROR_FILE, options, hive=False)


def write_run_record(output: str, run_id: str, record: dict, options: dict | None = None) -> None:
    path = storage.join(output, schema.RUNS_DIR, run_id, "run.json")
    storage.write_bytes_atomic(path, json.dumps(record, indent=2).encode(), options)


def run_records(output: str, options: dict | None = None) -> list[dict]:
    """Every run's record, oldest first."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.RUNS_DIR)
    if not fs.exists(folder):
        return []
    paths = [p for p in fs.find(folder) if p.endswith("/run.json")]
    records = [json.loads(data) for data in fs.cat(paths, on_error="raise").values()]
    return sorted(records, key=lambda r: r[schema.RUN_ID])
