"""Parquet output with deterministic names: a retried write replaces its own file instead of adding one."""

import hashlib
import logging

import pyarrow as pa
import pyarrow.compute as pc

from . import schema, storage

log = logging.getLogger(__name__)


def shard_name(uris: list[str]) -> str:
    """Named by the images it holds, so the same work always lands in the same file."""
    digest = hashlib.sha256("\n".join(sorted(uris)).encode()).hexdigest()
    return f"part-{digest[:24]}.parquet"


def caption_rows(images: pa.Table) -> pa.Table:
    """One row per (image, language) from one row per image with a list of captions."""
    results = images[schema.RESULTS]
    parents = pc.list_parent_indices(results)
    flat = pc.list_flatten(results)
    columns = {name: images[name].take(parents) for name in schema.CAPTION_FILE.names if name in images.column_names}
    for name in schema.CAPTION_RESULT.names:
        columns[name] = pc.struct_field(flat, name)
    return pa.table(columns)


def write_shard(images: pa.Table, output: str, options: dict | None = None) -> dict[str, int]:
    """Write one batch of image results: a caption file per language and an error file.

    Returns the counts the driver adds up for progress and the run summary.
    """
    failed = pc.is_valid(images[schema.ERROR_TYPE])
    errors = images.filter(failed)
    captions = caption_rows(images.filter(pc.invert(failed)))
    name = shard_name(images[schema.URI].to_pylist())
    for lang in pc.unique(captions[schema.LANG]).to_pylist():
        part = captions.filter(pc.equal(captions[schema.LANG], lang))
        path = storage.join(output, schema.CAPTIONS_DIR, f"{schema.LANG}={lang}", name)
        storage.write_parquet_atomic(path, part.select(schema.CAPTION_FILE.names).cast(schema.CAPTION_FILE), options)
    if errors.num_rows:
        path = storage.join(output, schema.ERRORS_DIR, name)
        storage.write_parquet_atomic(path, errors.select(schema.ERROR_FILE.names).cast(schema.ERROR_FILE), options)
    return {
        "images": images.num_rows,
        "captioned": images.num_rows - errors.num_rows,
        "failed": errors.num_rows,
        "captions": captions.num_rows,
    }
