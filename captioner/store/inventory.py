"""An AWS S3 Inventory report as the input of a run: a bucket of millions of objects is planned from the report S3
already wrote, without one LIST request, and streamed so the driver never holds the whole report.

A report is named by its ``manifest.json``. On S3 (or any remote store) its data files are read from the
destination bucket it names, with the same fsspec options. A local ``manifest.json`` reads its data files as AWS lays
them out: ``<report>/<YYYY-MM-DDTHH-MMZ>/manifest.json`` reads ``<report>/data/<file>``, the ``data`` folder next to
its timestamp folder; copy the report folder (the config-ID folder) whole, e.g.
``aws s3 sync s3://<destination>/<prefix>/<source-bucket>/<config-ID>/ ./report/``.
"""

import json
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from .. import schema
from ..config import UserError
from . import fs as storage

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
REQUIRED = ("sourceBucket", "destinationBucket", "fileFormat", "files")
HINT = ("pass the manifest.json of an S3 Inventory report "
        "(<destination>/<prefix>/<source-bucket>/<config-ID>/<YYYY-MM-DDTHH-MMZ>/manifest.json)")

# What a manifest row needs of the report, spelled as CSV fileSchema names it; Parquet spells it in snake_case.
KEY, SIZE, ETAG, LATEST, DELETED = "Key", "Size", "ETag", "IsLatest", "IsDeleteMarker"
FIELDS = {KEY: pa.string(), SIZE: pa.int64(), ETAG: pa.string(), LATEST: pa.bool_(), DELETED: pa.bool_()}
PARQUET = {name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in FIELDS}  # "ETag" -> "e_tag"


class InventoryError(UserError, ValueError):
    """The inventory report cannot be read as asked; the message says what is wrong and what to pass instead."""


def is_inventory(uri: str) -> bool:
    """True when ``uri`` names an inventory's manifest.json; decided by the name, so routing an input reads nothing."""
    return uri.rstrip("/").rsplit("/", 1)[-1] == MANIFEST_NAME


def batches(uri: str, extensions: tuple[str, ...], options: dict | None = None,
            rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    """Manifest rows (schema.MANIFEST: uri, size, etag; offset and error null) of every object the inventory lists
    whose key ends with one of ``extensions`` (case-insensitive), streamed batch by batch, never the whole report in
    memory.

    Rows come in report order, in batches of ``rows`` (the last one fewer). Delete markers, versions that are not
    the latest and folder placeholders (keys ending in "/") are skipped.
    """
    fs, path = storage.filesystem(uri, options)
    manifest = _manifest(fs, path)
    reader = READERS[manifest["fileFormat"].upper()]
    files = _data_files(fs, path, manifest)
    source = manifest["sourceBucket"]
    wanted = tuple(ext.lower() for ext in extensions)
    log.info("reading inventory of s3://%s from %d %s data files", source, len(files), manifest["fileFormat"])
    parts = (_rows(batch, source, wanted)
             for data in files for batch in reader(fs, data, manifest, rows))
    yield from _rebatch(parts, rows)


def _manifest(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    """The parsed manifest.json, checked for everything reading the report relies on."""
    where = storage.redact(storage.full_uri(fs, path))
    try:
        with fs.open(path, "rb") as f:
            manifest = json.load(f)
    except FileNotFoundError as exc:
        raise InventoryError(f"inventory manifest {where} does not exist; {HINT}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InventoryError(f"inventory manifest {where} is not valid JSON ({exc}); {HINT}") from exc
    if not isinstance(manifest, dict):
        raise InventoryError(f"inventory manifest {where} is not a JSON object; {HINT}")
    missing = [name for name in REQUIRED if name not in manifest]
    if missing:
        raise InventoryError(f"inventory manifest {where} lacks {', '.join(missing)}; {HINT}")
    fmt = manifest["fileFormat"]
    if not isinstance(fmt, str) or fmt.upper() not in READERS:
        raise InventoryError(f"inventory manifest {where} has fileFormat {fmt!r}; supported: CSV, Parquet. Set the "
                             "inventory configuration's output format to CSV or Parquet and pass a report in it")
    if fmt.upper() == "CSV" and KEY not in _csv_columns(manifest):
        raise InventoryError(f"inventory manifest {where} is CSV but its fileSchema "
                             f"{manifest.get('fileSchema')!r} names no {KEY} field; {HINT}")
    files = manifest["files"]
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("key"), str) for f in files):
        raise InventoryError(f"inventory manifest {where}: files must be a list of {{\"key\": ...}} entries; {HINT}")
    return manifest


def _data_files(fs: fsspec.AbstractFileSystem, path: str, manifest: dict) -> list[str]:
    """Paths in ``fs`` of the report's data files: in the destination bucket, or the local report's data folder."""
    keys = [entry["key"] for entry in manifest["files"]]
    if storage.is_local(fs):
        report = posixpath.dirname(posixpath.dirname(path))
        return [posixpath.join(report, *key.split("/")[-2:]) for key in keys]
    bucket = str(manifest["destinationBucket"]).rsplit(":", 1)[-1]  # "arn:aws:s3:::bucket" or a plain name
    return [f"{bucket}/{key}" for key in keys]


def _open(fs: fsspec.AbstractFileSystem, path: str, **kwargs):
    """Open a data file; a missing one says where it was looked for and why."""
    try:
        return fs.open(path, "rb", **kwargs)
    except FileNotFoundError as exc:
        rule = ("a local manifest.json reads <report>/data/<file>, next to its timestamp folder: copy the report "
                "folder whole" if storage.is_local(fs) else "the manifest's files must be in its destinationBucket")
        raise InventoryError(f"inventory data file {storage.full_uri(fs, path)} does not exist; {rule}") from exc


def _csv_columns(manifest: dict) -> list[str]:
    return [name.strip() for name in str(manifest.get("fileSchema") or "").split(",")]


def _read_csv(fs: fsspec.AbstractFileSystem, path: str, manifest: dict, rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of one gzipped, headerless CSV data file, decompressed as it streams; keys URL-decoded.

    Blocks are sized in bytes, so ``rows`` (the readers' shared signature) is left to the rebatching."""
    columns = _csv_columns(manifest)
    present = [name for name in FIELDS if name in columns]
    read = pcsv.ReadOptions(column_names=columns)
    convert = pcsv.ConvertOptions(column_types={name: FIELDS[name] for name in present}, include_columns=present)
    with _open(fs, path, compression="gzip") as f:
        for batch in pcsv.open_csv(f, read_options=read, convert_options=convert):
            keys = pa.array([urllib.parse.unquote_plus(k) for k in batch.column(KEY).to_pylist()], pa.string())
            yield _complete(batch.set_column(batch.schema.get_field_index(KEY), KEY, keys))


def _read_parquet(fs: fsspec.AbstractFileSystem, path: str, manifest: dict, rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of one Parquet data file, ``rows`` at a time, only the columns a manifest row needs."""
    with _open(fs, path) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        if PARQUET[KEY] not in names:
            raise InventoryError(f"inventory data file {storage.full_uri(fs, path)} has no {PARQUET[KEY]!r} column; "
                                 f"columns are {names}. {HINT}")
        present = {PARQUET[name]: name for name in FIELDS if PARQUET[name] in names}
        for batch in parquet.iter_batches(batch_size=rows, columns=list(present)):
            yield _complete(batch.rename_columns([present[name] for name in batch.schema.names]))


READERS: dict[str, Callable[[fsspec.AbstractFileSystem, str, dict, int], Iterator[pa.RecordBatch]]] = {
    "CSV": _read_csv, "PARQUET": _read_parquet}


def _complete(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with every field of FIELDS, typed; a field the report does not carry is null."""
    names = batch.schema.names
    columns = [batch.column(name).cast(kind) if name in names else pa.nulls(batch.num_rows, kind)
               for name, kind in FIELDS.items()]
    return pa.RecordBatch.from_arrays(columns, names=list(FIELDS))


def _rows(batch: pa.RecordBatch, bucket: str, wanted: tuple[str, ...]) -> pa.RecordBatch:
    """Manifest rows of the live, latest objects in ``batch`` whose key ends with one of ``wanted``."""
    named = pa.array([k.lower().endswith(wanted) and not k.endswith("/") for k in batch.column(KEY).to_pylist()])
    live = pc.invert(pc.fill_null(batch.column(DELETED), False))
    keep = pc.and_(named, pc.and_(live, pc.fill_null(batch.column(LATEST), True)))
    kept = batch.filter(keep)
    count = kept.num_rows
    return pa.RecordBatch.from_arrays([
        pc.binary_join_element_wise(f"s3://{bucket}/", kept.column(KEY), ""),
        kept.column(SIZE),
        pc.utf8_trim(kept.column(ETAG), '"'),
        pa.nulls(count, schema.MANIFEST.field(schema.OFFSET).type),
        pa.nulls(count, schema.MANIFEST.field(schema.ERROR).type),
    ], schema=schema.MANIFEST)


def _rebatch(parts: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` (the last one fewer), however the report's files and blocks happen to fall."""
    held: list[pa.RecordBatch] = []
    count = total = 0
    for part in parts:
        if not part.num_rows:  # most of a report may be other files: hold nothing for them
            continue
        held.append(part)
        count += part.num_rows
        total += part.num_rows
        if count >= rows:
            table = pa.Table.from_batches(held, schema.MANIFEST).combine_chunks()
            whole = count // rows * rows
            yield from table.slice(0, whole).to_batches(max_chunksize=rows)
            held, count = table.slice(whole).to_batches(), count - whole
    if count:
        yield pa.Table.from_batches(held, schema.MANIFEST).combine_chunks().to_batches()[0]
    log.info("inventory listed %d objects", total)
