"""The state of an output folder: committed shards, orphan clean-up, run records.

A shard is committed when its marker ``_commits/<shard>.json`` exists and every file it lists does; the marker
is written after the shard's Parquet files and lists them. Readers and resume see committed shards only, so a
crash between a data file and its marker can never show a row twice; the next run deletes such orphans. A marker
whose files are gone (a write that finished after its run stopped waiting for it) commits nothing: its images
are done again.
"""

import json
import logging
import posixpath
import re
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
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
    """Every committed shard: markers read in one batched request, then kept only where their files all exist."""
    return _markers(output, options)[0]


def _markers(output: str, options: dict | None) -> tuple[list[Shard], list[str], dict[str, str]]:
    """(the shard of every complete marker, paths of markers whose files are missing, the data files present:
    path relative to OUTPUT -> full path)."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.COMMITS_DIR)
    paths = sorted(p for p in fs.find(folder) if p.endswith(".json")) if fs.exists(folder) else []
    found = []
    for path, data in sorted(fs.cat(paths, on_error="raise").items() if paths else ()):  # never a partial view
        record = json.loads(data)
        found.append((path, Shard(**{**record, "files": tuple(record["files"])})))
    present = {}  # listed after the markers were read, so a marker's files were written before the listing
    for sub in (schema.CAPTIONS_DIR, schema.ERRORS_DIR):
        base = storage.join(root, sub)
        if fs.exists(base):
            present.update({p[len(root.rstrip("/")) + 1:]: p for p in fs.find(base)})
    complete = [shard for _, shard in found if present.keys() >= set(shard.files)]
    broken = [path for path, shard in found if not present.keys() >= set(shard.files)]
    if broken:
        log.warning("%d commit markers name files that are gone; their shards count as not written and their "
                    "images are done again", len(broken))
    return complete, broken, present


def file_lang(path: str) -> str | None:
    """The language of a caption file (``captions/lang=xx/...``); None for error files."""
    parts = path.split("/")
    if parts[0] != schema.CAPTIONS_DIR:
        return None
    return parts[1].removeprefix(f"{schema.LANG}=")


def remove_orphans(output: str, options: dict | None = None) -> int:
    """Delete what no complete marker stands for: data files of a run that died between a file and its marker,
    markers whose files are gone, and the in-flight records and plans of stopped runs. Call it holding the lease.

    Only files named the way captioner names them are touched, never anything else found under OUTPUT.
    """
    fs, root = storage.filesystem(output, options)
    complete, broken, present = _markers(output, options)
    listed = {f for s in complete for f in s.files}
    orphans = [full for relative, full in sorted(present.items())
               if relative not in listed and _OURS.match(posixpath.basename(relative))]
    if broken:
        fs.rm(broken)
    if orphans:
        log.info("removing %d uncommitted files left by an interrupted run", len(orphans))
        fs.rm(orphans)
    inflight = storage.join(root, schema.INFLIGHT_DIR)
    if fs.exists(inflight):
        fs.rm(inflight, recursive=True)
    plans = fs.glob(storage.join(root, schema.RUNS_DIR, "*", schema.TODO_DIR))  # left by runs that were killed
    if plans:
        fs.rm(plans, recursive=True)
    return len(orphans)


def inflight_marker(output: str, run_id: str, shard: str) -> str:
    return storage.join(output, schema.INFLIGHT_DIR, run_id, shard.replace(".parquet", ".json"))


def drain(output: str, run_id: str, timeout_s: float, options: dict | None = None) -> int:
    """Wait up to ``timeout_s`` for the write tasks of ``run_id`` still writing; returns how many still are."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.INFLIGHT_DIR, run_id)
    deadline = time.monotonic() + timeout_s
    while True:
        fs.invalidate_cache(folder)
        running = len(fs.ls(folder)) if fs.exists(folder) else 0
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.5)


class ScanOnce(pads.FileSystemDataset):
    """A Parquet dataset whose scans forget each file's footer once read.

    By default Arrow keeps every scanned file's parsed footer (about 50 KB) for the dataset's life, so one pass
    over an output of 10^4 files would hold half a gigabyte. Every scan goes through ``scanner``: ours, and
    DuckDB's over a registered dataset.
    """

    def scanner(self, *args, **kwargs) -> pads.Scanner:
        return super().scanner(*args, **{**kwargs, "cache_metadata": False})


def _dataset(output: str, files: list[str], file_schema: pa.Schema, options: dict | None, hive: bool) -> pads.Dataset:
    fs, root = storage.filesystem(output, options)
    paths = [storage.join(root, f) for f in files]
    if hive:
        base = storage.join(root, schema.CAPTIONS_DIR)
        found = pads.dataset(paths, filesystem=fs, format="parquet", schema=schema.CAPTIONS,
                             partitioning=pads.partitioning(pa.schema([pa.field(schema.LANG, pa.string())]),
                                                            flavor="hive"),
                             partition_base_dir=base)
    else:
        found = pads.dataset(paths, filesystem=fs, format="parquet", schema=file_schema)
    return ScanOnce(list(found.get_fragments()), found.schema, found.format, found.filesystem)


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


def write_fast_checks(output: str, run_id: str, actor: str, checks: list[dict], options: dict | None = None) -> None:
    """One caption actor's checks of the fast path so far (``models/fast.py``), rewritten whole as they grow."""
    path = storage.join(output, schema.RUNS_DIR, run_id, schema.FAST_CHECKS_DIR, f"{actor}.json")
    storage.write_bytes_atomic(path, json.dumps(checks).encode(), options)


def fast_checks(output: str, run_id: str, options: dict | None = None) -> list[dict]:
    """Every caption actor's checks of the fast path in a run."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.RUNS_DIR, run_id, schema.FAST_CHECKS_DIR)
    if not fs.exists(folder):
        return []
    paths = sorted(p for p in fs.find(folder) if p.endswith(".json"))
    return [check for data in fs.cat(paths, on_error="raise").values() for check in json.loads(data)]


def run_records(output: str, options: dict | None = None) -> list[dict]:
    """Every run's record, oldest first."""
    fs, root = storage.filesystem(output, options)
    folder = storage.join(root, schema.RUNS_DIR)
    if not fs.exists(folder):
        return []
    paths = [p for p in fs.find(folder) if p.endswith("/run.json")]
    records = [json.loads(data) for data in fs.cat(paths, on_error="raise").values()]
    return sorted(records, key=lambda r: r[schema.RUN_ID])
