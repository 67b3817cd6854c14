"""Freeze an input into a manifest: a folder of Parquet parts of (uri, size, etag[, offset, error]), streamed.

Inputs: a folder or prefix (listed in parallel; ``.tar`` files in it are read as WebDataset shards), one file
(an image or video, a manifest ``.parquet``/``.csv``/``.txt`` of any size, read in batches, an S3 Inventory
``manifest.json``, a ``.tar`` shard), or a glob of such files (``manifests/*.parquet``, ``shards/*.tar``).
Rows flow from the store to the parts batch by batch; no input is ever held whole in memory.
"""

import io
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import schema
from ..config import IMAGE_EXTENSIONS, UserError
from . import fs as storage
from . import inventory, listing, tars

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".txt")
PART_ROWS = 1_000_000  # rows per manifest part
BATCH_ROWS = 100_000  # rows read at a time from a manifest file
GLOB_CHARS = "*?["


class InputError(UserError, ValueError):
    """The input cannot be listed; the message says what to fix."""


def freeze(uri: str, extensions: tuple[str, ...], options: dict | None, dest: str,
           dest_options: dict | None = None) -> int:
    """Write the rows of input ``uri`` as Parquet parts under the folder ``dest``; returns how many rows."""
    rows = part = 0
    for table in regroup(batches(uri, extensions, options), PART_ROWS):
        storage.write_parquet_atomic(storage.join(dest, f"part-{part:05d}.parquet"), table, dest_options)
        rows, part = rows + table.num_rows, part + 1
        if table.num_rows == PART_ROWS:  # a line per million: a big listing shows progress, a small one is quiet
            log.info("listed %d files so far", rows)
    if rows == 0:
        raise InputError(
            f"no images found under {uri!r} (extensions: {', '.join(extensions)}); "
            "check the path, or pass --extensions"
        )
    log.info("listed %d images under %s", rows, storage.redact(uri))
    return rows


def dataset(dest: str, options: dict | None = None) -> pads.Dataset:
    """The frozen manifest under ``dest`` as one dataset, scanned in batches."""
    fs, root = storage.filesystem(dest, options)
    return pads.dataset(root, filesystem=fs, format="parquet", schema=schema.MANIFEST)


def regroup(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Regroup a stream of tables into tables of ``rows`` rows (the last may be shorter)."""
    held: list[pa.Table] = []
    count = 0
    for table in tables:
        held.append(table)
        count += table.num_rows
        while count >= rows:
            whole = pa.concat_tables(held)
            yield whole.slice(0, rows).combine_chunks()
            held, count = [whole.slice(rows)], count - rows
    if count:
        yield pa.concat_tables(held).combine_chunks()


def batches(uri: str, extensions: tuple[str, ...], options: dict | None = None) -> Iterator[pa.Table]:
    """The input's manifest rows, a batch at a time."""
    wanted = tuple(e.lower() for e in extensions)
    fs, path = storage.filesystem(uri, options)
    if any(c in path for c in GLOB_CHARS) and not fs.exists(path):  # "photos [2020]/" is a folder, not a pattern
        paths = sorted(fs.glob(path))
        if not paths:
            raise InputError(f"no file matches {uri!r}; check the pattern")
        for path in paths:
            yield from batches(storage.full_uri(fs, path), extensions, options)
    elif inventory.is_inventory(uri):
        yield from (_normal(b) for b in inventory.batches(uri, wanted, options, BATCH_ROWS))
    elif uri.lower().endswith(MANIFEST_SUFFIXES):
        yield from (_normal(b, uri) for b in _manifest_file(uri, options))
    else:
        members = tuple(e for e in wanted if e in IMAGE_EXTENSIONS)
        for page in listing.pages(uri, options, lambda u: u.lower().endswith((*wanted, ".tar"))):
            yield from _with_members(page, members, options)


def _with_members(page: list[listing.Row], members: tuple[str, ...], options: dict | None) -> Iterator[pa.Table]:
    """The page's files, with each ``.tar`` shard replaced by its image members (shards read in parallel)."""
    files = [row for row in page if not tars.is_shard(row[0])]
    shards = [row for row in page if tars.is_shard(row[0])]
    if files:
        yield pa.table([pa.array(c) for c in zip(*files)] + [pa.nulls(len(files), pa.int64()),
                                                              pa.nulls(len(files), pa.string())],
                       schema=schema.MANIFEST)
    if shards:
        with ThreadPoolExecutor(listing.LISTERS, thread_name_prefix="shard") as pool:
            found = pool.map(lambda shard: list(tars.members(shard[0], shard[2], members, options)), shards)
            for rows in found:
                if rows:
                    yield pa.Table.from_pylist(rows, schema=schema.MANIFEST)


def _manifest_file(uri: str, options: dict | None) -> Iterator[pa.Table]:
    """A Parquet/CSV file with a ``uri`` column (and optionally size, etag), or a text file of URIs, in batches."""
    fs, path = storage.filesystem(uri, options)
    lower = uri.lower()
    with fs.open(path, "rb", compression="infer" if lower.endswith(".gz") else None) as f:
        if lower.endswith(".txt"):
            lines: list[str] = []
            for raw in io.TextIOWrapper(f, encoding="utf-8-sig"):
                line = raw.strip()
                if line and not line.startswith("#"):
                    lines.append(line)
                if len(lines) >= BATCH_ROWS:
                    yield pa.table({schema.URI: lines})
                    lines = []
            yield pa.table({schema.URI: pa.array(lines, pa.string())})
        elif lower.endswith((".csv", ".csv.gz")):
            as_text = {schema.URI: pa.string(), schema.ETAG: pa.string()}  # never let type inference touch them
            reader = pcsv.open_csv(f, convert_options=pcsv.ConvertOptions(column_types=as_text))
            yield from (pa.Table.from_batches([b]) for b in reader)
        else:
            for batch in pq.ParquetFile(f).iter_batches(BATCH_ROWS):
                yield pa.Table.from_batches([batch])


def _normal(table: pa.Table | pa.RecordBatch, uri: str = "") -> pa.Table:
    """Any table with a ``uri`` column as manifest rows: URIs made absolute, missing columns null."""
    if schema.URI not in table.schema.names:
        raise InputError(f"manifest {uri!r} has no {schema.URI!r} column; columns are {table.schema.names}")
    uris = table[schema.URI].cast(pa.string())
    if not pc.all(pc.match_substring(uris, "://")).as_py():  # relative local paths: made absolute, one by one
        uris = pa.array([absolute(u) for u in uris.to_pylist()], pa.string())
    columns = {schema.URI: uris}
    for field in schema.MANIFEST:
        if field.name != schema.URI:
            present = field.name in table.schema.names
            columns[field.name] = table[field.name].cast(field.type) if present else pa.nulls(len(table), field.type)
    return pa.table(columns, schema=schema.MANIFEST)


def absolute(uri: str) -> str:
    """The URI a listing would give: relative local paths made absolute, so every worker can open them."""
    return uri if "://" in uri else os.path.abspath(uri)
