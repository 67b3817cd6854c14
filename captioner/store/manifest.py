"""Freeze an input into a manifest of (uri, size, etag), and subtract what the output already holds."""

import io
import json
import logging
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import schema
from ..config import UserError
from . import fs as storage

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".parquet", ".csv", ".txt")


class InputError(UserError, ValueError):
    """The input cannot be listed; the message says what to fix."""


def build(uri: str, extensions: tuple[str, ...], options: dict | None = None) -> pa.Table:
    """List ``uri`` (a folder, prefix or manifest file) into a manifest table sorted by URI."""
    if uri.lower().endswith(MANIFEST_SUFFIXES):
        table = _read_manifest_file(uri, options)
    else:
        wanted = tuple(ext.lower() for ext in extensions)
        rows = [row for row in storage.walk_files(uri, options) if row[0].lower().endswith(wanted)]
        table = pa.Table.from_pylist(
            [{schema.URI: u, schema.SIZE: s, schema.ETAG: e} for u, s, e in rows], schema=schema.MANIFEST
        )
    if table.num_rows == 0:
        raise InputError(
            f"no images found under {uri!r} (extensions: {', '.join(extensions)}); "
            "check the path, or pass --extensions"
        )
    log.info("listed %d images under %s", table.num_rows, storage.redact(uri))
    return table.sort_by(schema.URI)


def _read_manifest_file(uri: str, options: dict | None) -> pa.Table:
    """A Parquet/CSV file with a ``uri`` column (and optionally size, etag), or a text file of URIs."""
    data = storage.read_bytes(uri, options)
    if uri.lower().endswith(".txt"):
        uris = [line.strip() for line in data.decode("utf-8-sig").splitlines()]
        table = pa.table({schema.URI: [u for u in uris if u and not u.startswith("#")]})
    elif uri.lower().endswith(".csv"):
        as_text = {schema.URI: pa.string(), schema.ETAG: pa.string()}  # never let CSV type inference touch them
        table = pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(column_types=as_text))
    else:
        table = pq.read_table(io.BytesIO(data))
    if schema.URI not in table.column_names:
        raise InputError(f"manifest {uri!r} has no {schema.URI!r} column; columns are {table.column_names}")
    table = table.set_column(table.column_names.index(schema.URI), schema.URI,
                             pa.array([absolute(u) for u in table[schema.URI].to_pylist()], pa.string()))
    columns = {}
    for field in schema.MANIFEST:
        if field.name in table.column_names:
            columns[field.name] = table[field.name].cast(field.type)
        else:
            columns[field.name] = pa.nulls(table.num_rows, field.type)
    return pa.table(columns, schema=schema.MANIFEST).combine_chunks()


def absolute(uri: str) -> str:
    """The URI a listing would give: relative local paths made absolute, so every worker can open them."""
    return uri if "://" in uri else os.path.abspath(uri)


def pending(
    listing: pa.Table, captioned: pa.Table, failed: pa.Table, languages: tuple[str, ...], retry_errors: bool = False
) -> pa.Table:
    """Listing rows still missing a caption in some language, with those languages in ``langs``.

    ``captioned`` holds (uri, size, etag, lang[, segment, segments]) of committed captions, ``failed`` (uri,
    size, etag, error_type, attempt[, segment]) of committed errors: a video is done in a language once each of
    its segments is captioned or failed for good. Images match on their full identity, so a changed object
    (new size or etag) is captioned again; identity columns a manifest file left empty are not compared.
    Images that failed for good are skipped unless ``retry_errors``; store failures are always retried.
    ``attempt`` counts the earlier failed attempts of each image.
    """
    keys = _keys(listing)
    lost = segment_failures(failed, keys, retry_errors)
    if schema.SEGMENT in failed.column_names:  # from here on, failures of whole files
        failed = failed.filter(pc.is_null(failed[schema.SEGMENT])).drop_columns([schema.SEGMENT])
    failed = failed.join(captioned.select(keys), keys, join_type="left anti").sort_by(schema.ATTEMPT)  # success wins
    last = failed.group_by(keys, use_threads=False).aggregate([(schema.ATTEMPT, "max"), (schema.ERROR_TYPE, "last")])
    last = last.rename_columns([*keys, schema.ATTEMPT, schema.ERROR_TYPE])
    if not retry_errors:
        permanent = pc.invert(pc.is_in(last[schema.ERROR_TYPE], pa.array(sorted(schema.TRANSIENT_ERRORS))))
        listing = listing.join(last.filter(permanent).select(keys), keys, join_type="left anti")
    wanted = _cross(listing, languages)
    missing = wanted.join(_done(captioned, lost, keys, languages), [*keys, schema.LANG], join_type="left anti")
    grouped = missing.group_by(list(schema.IDENTITY), use_threads=False).aggregate([(schema.LANG, "list")])
    todo = pa.table({
        **{c: grouped[c] for c in schema.IDENTITY},
        schema.LANGS: pc.binary_join(grouped[f"{schema.LANG}_list"], ","),
    })
    todo = todo.join(last.select([*keys, schema.ATTEMPT]), keys, join_type="left outer")
    attempts = pc.fill_null(todo[schema.ATTEMPT], 0).cast(pa.int32())
    return todo.set_column(todo.column_names.index(schema.ATTEMPT), schema.ATTEMPT, attempts).sort_by(schema.URI)


def with_source_captions(todo: pa.Table, captions: pads.Dataset, lang: str) -> pa.Table:
    """Attach each image's stored ``lang`` caption, so a language added later translates what is written."""
    stored = captions.to_table(
        columns=[*schema.IDENTITY, schema.CAPTION, schema.RUN_ID],
        filter=(pc.field(schema.LANG) == lang) & pc.field(schema.URI).isin(todo[schema.URI])
        & pc.field(schema.SEGMENT).is_null(),  # a video's stored captions travel per segment (with_stored_segments)
    )
    keys = _keys(todo)
    # one stored caption per image: the latest run's, should several runs have written this language
    stored = stored.sort_by([(schema.RUN_ID, "descending")])
    stored = stored.group_by(keys, use_threads=False).aggregate([(schema.CAPTION, "first")])
    stored = stored.rename_columns([*keys, schema.SOURCE_CAPTION])
    return todo.join(stored, keys, join_type="left outer").sort_by(schema.URI)


def segment_failures(failed: pa.Table, keys: list[str], retry_errors: bool) -> pa.Table:
    """(keys, segment) of video segments that failed for good (none with ``retry_errors``): they count as done."""
    empty = pa.table({**{k: pa.array([], failed.schema.field(k).type) for k in keys},
                      schema.SEGMENT: pa.array([], pa.int32())})
    if schema.SEGMENT not in failed.column_names or retry_errors:
        return empty
    permanent = pc.invert(pc.is_in(failed[schema.ERROR_TYPE], pa.array(sorted(schema.TRANSIENT_ERRORS))))
    lost = failed.filter(pc.and_(pc.is_valid(failed[schema.SEGMENT]), permanent))
    return lost.select([*keys, schema.SEGMENT]).cast(empty.schema)


def _done(captioned: pa.Table, lost: pa.Table, keys: list[str], languages: tuple[str, ...]) -> pa.Table:
    """(keys, lang) captioned in full: images, and videos whose every segment is captioned in that language or
    failed for good (``lost``)."""
    if schema.SEGMENT not in captioned.column_names:  # outputs of images only
        return captioned.select([*keys, schema.LANG])
    still = captioned.filter(pc.is_null(captioned[schema.SEGMENT])).select([*keys, schema.LANG])
    columns = [*keys, schema.LANG, schema.SEGMENT, schema.SEGMENTS]
    videos = captioned.filter(pc.is_valid(captioned[schema.SEGMENT])).select(columns)
    lost = _cross(lost, languages).append_column(schema.SEGMENTS, pa.nulls(lost.num_rows * len(languages), pa.int32()))
    videos = pa.concat_tables([videos.cast(lost.select(columns).schema), lost.select(columns)])
    per = videos.group_by([*keys, schema.LANG], use_threads=False).aggregate(
        [(schema.SEGMENT, "count_distinct"), (schema.SEGMENTS, "max")])
    whole = per.filter(pc.equal(per[f"{schema.SEGMENT}_count_distinct"], per[f"{schema.SEGMENTS}_max"]))
    return pa.concat_tables([still, whole.select([*keys, schema.LANG]).cast(still.schema)])


def with_stored_segments(todo: pa.Table, captions: pads.Dataset, failed: pa.Table, retry_errors: bool) -> pa.Table:
    """Attach to each partly done video what is stored of it, JSON ``{"captions": {segment: {lang: caption}},
    "failed": [segment...]}``, so the decode stage skips what is done and a language added later translates
    what is written. Stored rows match the video's whole identity: a replaced video starts over."""
    if not todo.num_rows:
        return todo.append_column(schema.STORED, pa.array([], pa.string()))
    keys = _keys(todo)
    stored = captions.to_table(
        columns=[*schema.IDENTITY, schema.SEGMENT, schema.LANG, schema.CAPTION],
        filter=pc.field(schema.SEGMENT).is_valid() & pc.field(schema.URI).isin(todo[schema.URI]),
    ).join(todo.select(keys), keys, join_type="inner")
    lost = segment_failures(failed, keys, retry_errors).join(todo.select(keys), keys, join_type="inner")
    by_video: dict[tuple, dict] = {}
    for row in stored.to_pylist():
        video = by_video.setdefault(tuple(row[k] for k in keys), {"captions": {}, "failed": []})
        video["captions"].setdefault(str(row[schema.SEGMENT]), {})[row[schema.LANG]] = row[schema.CAPTION]
    for row in lost.to_pylist():
        by_video.setdefault(tuple(row[k] for k in keys), {"captions": {}, "failed": []})["failed"].append(
            row[schema.SEGMENT])
    identities = zip(*(todo[k].to_pylist() for k in keys))
    column = pa.array([json.dumps(by_video[i]) if i in by_video else None for i in identities], pa.string())
    return todo.append_column(schema.STORED, column)


def _keys(table: pa.Table) -> list[str]:
    """Identity columns to match on: the URI, and size and etag where the listing knows them for every row
    (joins never match nulls, so a partly filled column cannot be a key)."""
    return [c for c in schema.IDENTITY if c == schema.URI or table[c].null_count == 0]


def _cross(table: pa.Table, languages: tuple[str, ...]) -> pa.Table:
    """Every row of ``table`` once per language."""
    repeated = pa.concat_tables([table] * len(languages))
    langs = pa.array([lang for lang in languages for _ in range(table.num_rows)], pa.string())
    return repeated.append_column(schema.LANG, langs)
