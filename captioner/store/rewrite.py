"""Overwrite mode's edits of committed shards: superseded rows dropped, emptied files taken out, and every
marker touched recounted from the files it keeps, so that ``captioner stats`` stays true after an overwrite."""

import collections

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .. import schema
from . import fs as storage
from .state import Shard, commit, file_lang


def drop_rows(output: str, shards: list[Shard], files: set[str], superseded: pa.Table,
              options: dict | None = None) -> int:
    """Remove from ``files`` the rows whose (uri, lang) is in ``superseded``: rows replaced by newer ones.

    Each file is rewritten atomically without those rows, or taken out of its shard when none are left;
    rows of images the new run did not cover stay. Returns the number of rows removed.
    """
    fs, root = storage.filesystem(output, options)
    removed = 0
    rewritten, emptied = set(), set()
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
            rewritten.add(path)
        else:
            emptied.add(path)
    remove_files(output, shards, emptied, options, rewritten=rewritten)
    return removed


def remove_files(output: str, shards: list[Shard], files: set[str], options: dict | None = None,
                 rewritten: set[str] = frozenset()) -> None:
    """Take ``files`` out of their shards and recount the shards of ``rewritten`` files: each marker is rewritten
    (or removed) first, then the files go, so no reader ever sees a listed file missing."""
    fs, root = storage.filesystem(output, options)
    for shard in shards:
        kept = tuple(f for f in shard.files if f not in files)
        if len(kept) == len(shard.files) and not rewritten.intersection(shard.files):
            continue
        if kept:
            langs = {file_lang(f) for f in kept}
            counts, kinds = recount(output, kept, options)
            commit(output, Shard(shard.name, shard.run_id, kept, {k: v for k, v in shard.fingerprints.items()
                                                                   if k in langs}, counts, kinds), options)
        else:
            fs.rm(storage.join(root, schema.COMMITS_DIR, shard.name.replace(".parquet", ".json")))
    if files:
        fs.rm([storage.join(root, f) for f in sorted(files)])


def recount(output: str, files: tuple[str, ...], options: dict | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """A marker's counts and errors by type, from the rows its ``files`` hold now (as the writer counts them)."""
    fs, root = storage.filesystem(output, options)
    captions = [pads.dataset(storage.join(root, f), filesystem=fs, format="parquet").to_table(
        columns=[schema.URI, schema.SEGMENT, schema.CAPTION]) for f in files if file_lang(f) is not None]
    errors = [pads.dataset(storage.join(root, f), filesystem=fs, format="parquet").to_table(
        columns=[schema.URI, schema.SEGMENT, schema.ERROR_TYPE]) for f in files if file_lang(f) is None]
    items: set[tuple] = set()
    rows = empty = failed = failed_segments = 0
    for table in captions:
        rows += table.num_rows
        empty += int(pc.sum(pc.equal(table[schema.CAPTION], "")).as_py() or 0)
        items.update(zip(table[schema.URI].to_pylist(), table[schema.SEGMENT].to_pylist()))
    kinds: collections.Counter = collections.Counter()
    uris = {uri for uri, _ in items}
    whole_failures = set()
    for table in errors:
        kinds.update(table[schema.ERROR_TYPE].to_pylist())
        for uri, segment in zip(table[schema.URI].to_pylist(), table[schema.SEGMENT].to_pylist()):
            uris.add(uri)
            if segment is None:
                failed += 1
                whole_failures.add(uri)
            else:
                failed_segments += 1
    counts = {"images": len(uris), "captioned": len(uris - whole_failures), "failed": failed,
              "segments": sum(segment is not None for _, segment in items), "failed_segments": failed_segments,
              "captions": rows, "empty_captions": empty}
    return counts, dict(kinds)
