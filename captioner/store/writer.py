"""Parquet output with deterministic names and a commit marker per shard, written last.

A shard's name derives from the run and the images it holds, so a retried write task replaces its own
files instead of adding copies, and no run ever overwrites another run's shard.
"""

import collections
import hashlib
import json
import posixpath

import pyarrow as pa
import pyarrow.compute as pc

from .. import schema
from . import fs as storage
from .state import Shard, commit, inflight_marker


def _count(mask: pa.ChunkedArray) -> int:
    return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)


def shard_name(run_id: str, uris: list[str]) -> str:
    """Named by the run and the images it holds, so the same work in the same run lands in the same file.

    A hash, never a piece of a URI, so no key can steer where a file goes; JSON keeps a URI holding a newline
    from spelling two URIs and colliding with another shard."""
    digest = hashlib.sha256(json.dumps([run_id, *sorted(uris)]).encode()).hexdigest()
    return f"part-{digest[:24]}.parquet"


def _keys(images: pa.Table) -> list[str]:
    """What a shard holds: each image's URI, with its segment for a video (segments of one video may be split
    between shards)."""
    segments = images[schema.SEGMENT].to_pylist() if schema.SEGMENT in images.column_names else [None] * len(images)
    return [uri if segment is None else f"{uri}#{segment}"
            for uri, segment in zip(images[schema.URI].to_pylist(), segments)]


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
    """Write one batch of image results (a caption file per language, an error file), then commit it.

    Returns the counts the driver adds up for progress and the run summary.
    """
    failed = pc.is_valid(images[schema.ERROR_TYPE])
    errors = images.filter(failed)
    captions = caption_rows(images.filter(pc.invert(failed)))
    run_id = images[schema.RUN_ID][0].as_py()
    name = shard_name(run_id, _keys(images))
    inflight = inflight_marker(output, run_id, name)
    storage.write_bytes_atomic(inflight, b"{}", options)  # what a stopping run waits for
    files = []
    for lang in pc.unique(captions[schema.LANG]).to_pylist():
        part = captions.filter(pc.equal(captions[schema.LANG], lang))
        files.append(posixpath.join(schema.CAPTIONS_DIR, f"{schema.LANG}={lang}", name))
        table = part.select(schema.CAPTION_FILE.names).cast(schema.CAPTION_FILE)
        storage.write_parquet_atomic(storage.join(output, files[-1]), table, options)
    if errors.num_rows:
        files.append(posixpath.join(schema.ERRORS_DIR, name))
        table = errors.select(schema.ERROR_FILE.names).cast(schema.ERROR_FILE)
        storage.write_parquet_atomic(storage.join(output, files[-1]), table, options)
    counted = pc.fill_null(images[schema.COUNTED], True)  # one row per file: an image, a failure, a video
    whole = pc.is_null(images[schema.SEGMENT])  # rows that stand for a whole file (images and failed files)
    counts = {
        "images": _count(counted),
        "captioned": _count(pc.and_(counted, pc.invert(pc.and_(failed, whole)))),
        "failed": _count(pc.and_(failed, whole)),
        "segments": _count(pc.and_(pc.invert(whole), pc.invert(failed))),
        "failed_segments": _count(pc.and_(pc.invert(whole), failed)),
        "captions": captions.num_rows,
        # the model ended at once: kept as rows (caption = ''), counted so a run says how many
        "empty_captions": int(pc.sum(pc.equal(captions[schema.CAPTION], "")).as_py() or 0),
    }
    kinds = collections.Counter(errors[schema.ERROR_TYPE].to_pylist())
    fingerprints = dict(zip(captions[schema.LANG].to_pylist(), captions[schema.FINGERPRINT].to_pylist()))
    shard = Shard(name=name, run_id=run_id, files=tuple(files), fingerprints=fingerprints, counts=counts,
                  errors_by_type=dict(kinds))
    commit(output, shard, options)
    storage.remove(inflight, options)
    return counts
