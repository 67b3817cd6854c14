"""The read + decode stage: each input row becomes one row per image, or one per video segment still to caption.

Failures become rows with ``error_type`` set (a video that cannot be read is one row, a segment that does not
decode one more), so one bad file never fails a batch.
Images are read here (ranged, capped) and decoded in the bounded child; videos are opened by the child itself
through fsspec, so only the frames it seeks to are read. Ray meets this code through ``map_batches`` only.
"""

import json
import random
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .. import schema
from ..config import DecodeConfig, StorageConfig, VideoConfig
from ..media import sandbox
from ..media.image import DecodeFailure, ImageSpec
from ..media.video import VideoDecoded, VideoPlan
from ..store import fs as storage
from ..store import tars

STORE_TRIES = 4  # attempts per object read or shard write within a task
READ_BACKOFF_S = 0.5  # first retry delay; doubles each time, with jitter
PASSED = (schema.URI, schema.ATTEMPT)  # input columns every output row keeps as they are
T = TypeVar("T")


def read_and_decode(batch: dict[str, np.ndarray], images: dict[str, ImageSpec], store: StorageConfig,
                    limits: DecodeConfig, video: VideoConfig, source_language: str) -> dict[str, np.ndarray]:
    """Read each object and decode it once into every model's input (``images``: column -> spec).

    Objects over the size cap are never read, and decoding happens in a bounded child process (``sandbox``), so no
    single file can stall or sink the worker. Pixel columns are (F, H, W, 3) per row for multi-frame models.
    """
    decoder = sandbox.shared(limits.formats, limits.max_pixels, limits.timeout_s, limits.memory_mb)
    rows: list[dict] = []
    with tars.ShardReader(store.options) as shards:
        for i in range(len(batch[schema.URI])):
            row = {key: plain(batch[key][i]) for key in (*PASSED, schema.SIZE, schema.ETAG, schema.LANGS,
                                                           schema.SOURCE_CAPTION, schema.STORED) if key in batch}
            listed = {key: plain(batch[key][i]) if key in batch else None for key in (schema.OFFSET, schema.ERROR)}
            try:
                rows += _file_rows(decoder, shards, row, listed, images, store, limits, video, source_language)
            except sandbox.DecoderUnavailable as exc:
                rows.append(_failed(row, "decoder_unavailable", str(exc)))
            except FileNotFoundError as exc:
                rows.append(_failed(row, "not_found", f"object is gone: {exc}"))
            except PermissionError as exc:
                rows.append(_failed(row, "forbidden", f"no permission to read the object: {exc}"))
            except Exception as exc:  # any other store failure is this file's error, not the batch's
                rows.append(_failed(row, "read_error", f"{type(exc).__name__}: {exc}"))
    return _columns(rows, images)


def _file_rows(decoder: sandbox.Decoder, shards: tars.ShardReader, row: dict, listed: dict,
               images: dict[str, ImageSpec], store: StorageConfig, limits: DecodeConfig, video: VideoConfig,
               source_language: str) -> list[dict]:
    """The rows of one input file: its image, its video segments, or its error."""
    uri, offset = row[schema.URI], listed[schema.OFFSET]
    if listed[schema.ERROR] is not None:  # the listing found it unreadable: a corrupt tar shard
        return [_failed(row, "corrupt_tar", listed[schema.ERROR])]
    if offset is None and row[schema.ETAG] is None:  # a manifest that named only the URI: record what was read
        row[schema.SIZE], row[schema.ETAG] = storage.identity(uri, store.options(uri))
    is_video = offset is None and uri.lower().endswith(video.extensions)
    if not is_video and row[schema.SIZE] is not None and row[schema.SIZE] > limits.max_file_mb * 2**20:
        return [_failed(row, "too_large", _too_large(row[schema.SIZE], limits))]  # videos stream: no byte cap
    if offset is not None:  # a member of a tar shard, read from the shard's open stream
        data = retried(lambda: shards.read(uri, int(offset), row[schema.SIZE]))
        return [_decoded(decoder, row, data, images)]
    if is_video:
        return _video_rows(decoder, row, images, store, limits, video, source_language)
    return [_image_row(decoder, row, images, store, limits)]


def _image_row(decoder: sandbox.Decoder, row: dict, images: dict[str, ImageSpec], store: StorageConfig,
               limits: DecodeConfig) -> dict:
    max_bytes = limits.max_file_mb * 2**20
    data = _read(row[schema.URI], store, max_bytes + 1)
    if len(data) > max_bytes:  # grew since it was listed
        return _failed(row, "too_large", _too_large(len(data), limits))
    if row[schema.SIZE] is not None and len(data) != row[schema.SIZE]:
        return _failed(row, "changed", f"object is {len(data)} bytes now, {row[schema.SIZE]} when listed")
    return _decoded(decoder, row, data, images)


def _decoded(decoder: sandbox.Decoder, row: dict, data: bytes, images: dict[str, ImageSpec]) -> dict:
    result = decoder.decode(data, [spec.resize for spec in images.values()])
    if isinstance(result, DecodeFailure):
        return _failed(row, result.error_type, result.message)
    # a multi-frame model sees a still image as that many identical frames
    pixels = {c: np.repeat(p[None], images[c].frames, axis=0) if images[c].frames > 1 else p
              for c, p in zip(images, result.pixels)}
    return {**row, **pixels, schema.WIDTH: result.width, schema.HEIGHT: result.height}


def _video_rows(decoder: sandbox.Decoder, row: dict, images: dict[str, ImageSpec], store: StorageConfig,
                limits: DecodeConfig, video: VideoConfig, source_language: str) -> list[dict]:
    """One row per segment that still lacks a language, with only the languages it lacks; a segment that does
    not decode is an error row of its own, the video's others go on."""
    stored = json.loads(row.get(schema.STORED) or '{"captions": {}, "failed": []}')
    captions = {int(k): v for k, v in stored["captions"].items()}
    langs = row[schema.LANGS].split(",")
    plan = VideoPlan(video.segment_s, video.max_video_s, limits.max_pixels)
    done = frozenset(k for k, have in captions.items() if set(langs) <= set(have)) | frozenset(stored["failed"])
    result = decoder.decode_video(row[schema.URI], store.options(row[schema.URI]),
                                  [spec.resize for spec in images.values()], [spec.frames for spec in images.values()],
                                  plan, done, row[schema.SIZE])
    if isinstance(result, DecodeFailure):
        return [_failed(row, result.error_type, result.message)]
    rows = [_segment_row(row, images, result, k, langs, captions.get(k.index, {}), source_language)
            for k in result.decoded]
    rows += [{**_failed(row, k.error_type, k.message), schema.SEGMENT: k.index, schema.START_S: k.start_s,
              schema.END_S: k.end_s, schema.SEGMENTS: result.segments} for k in result.failed]
    for later in rows[1:]:
        later[schema.COUNTED] = False  # the file counts once, with its first row
    return rows


def _segment_row(row: dict, images: dict[str, ImageSpec], video: VideoDecoded, segment, langs: list[str],
                 have: dict[str, str], source_language: str) -> dict:
    pixels = {c: p if images[c].frames > 1 else p[0] for c, p in zip(images, segment.pixels)}
    return {**row, **pixels, schema.WIDTH: video.width, schema.HEIGHT: video.height,
            schema.LANGS: ",".join(lang for lang in langs if lang not in have),
            schema.SOURCE_CAPTION: have.get(source_language, row.get(schema.SOURCE_CAPTION)),
            schema.SEGMENT: segment.index, schema.START_S: segment.start_s, schema.END_S: segment.end_s,
            schema.SEGMENTS: video.segments}


def _failed(row: dict, error_type: str, message: str) -> dict:
    return {**row, schema.ERROR_TYPE: error_type, schema.ERROR: message}


def _columns(rows: list[dict], images: dict[str, ImageSpec]) -> dict[str, np.ndarray]:
    """Rows as the column batch Ray Data carries: fixed types, so every block has the same schema."""
    out = {key: np.array([r.get(key) for r in rows], dtype=object)
           for key in (schema.URI, schema.SIZE, schema.ETAG, schema.LANGS, schema.SOURCE_CAPTION, schema.ERROR_TYPE,
                       schema.ERROR)}
    out[schema.ATTEMPT] = np.array([r.get(schema.ATTEMPT) or 0 for r in rows], dtype=np.int32)
    out[schema.COUNTED] = np.array([r.get(schema.COUNTED, True) for r in rows], dtype=bool)
    for key in (schema.WIDTH, schema.HEIGHT, schema.SEGMENTS):
        out[key] = np.array([r.get(key) or 0 for r in rows], dtype=np.int32)
    out[schema.SEGMENT] = np.array([-1 if r.get(schema.SEGMENT) is None else r[schema.SEGMENT] for r in rows],
                                   dtype=np.int32)  # -1: a still image
    for key in (schema.START_S, schema.END_S):
        out[key] = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=np.float32)
    for column, spec in images.items():
        shape = (spec.frames,) * (spec.frames > 1) + (spec.resize.height, spec.resize.width, 3)
        empty = np.zeros(shape, dtype=np.uint8)
        out[column] = np.stack([r.get(column, empty) for r in rows]) if rows else np.zeros((0, *shape), np.uint8)
    return out


def _too_large(size: int, limits: DecodeConfig) -> str:
    return f"file is {size / 2**20:,.1f} MiB, over the {limits.max_file_mb} MiB limit (--max-image-mb)"


def _read(uri: str, store: StorageConfig, limit: int) -> bytes:
    """At most ``limit`` bytes of the object, store hiccups retried (``retried``); a missing or forbidden object
    is not."""
    return retried(lambda: storage.read_bytes(uri, store.options(uri), limit=limit))


def retried(call: Callable[[], T], retry_on: tuple[type[BaseException], ...] = (Exception,),
            give_up: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError)) -> T:
    """``call()``, tried again on ``retry_on`` (but not ``give_up``) with jittered exponential backoff, on top of
    the S3 client's own retries: a store hiccup within a run costs a moment, not a file."""
    for attempt in range(STORE_TRIES - 1):
        try:
            return call()
        except give_up:
            raise
        except retry_on:
            time.sleep(READ_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))
    return call()


def plain(value):
    """numpy scalars and NaN-filled nulls back to Python values."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
