"""The thin layer where Ray Data meets the pure code: batch adapters and the caption actor.

Each stage takes and returns plain column batches. Failures become rows with ``error_type`` set,
so one bad image never fails a batch.
"""

import logging
import random
import time

import numpy as np
import pyarrow as pa
import torch

from .. import schema
from ..config import DecodeConfig, RunConfig, StorageConfig
from ..fingerprint import fingerprints
from ..media import sandbox
from ..media.image import DecodeFailure
from ..models import generate, loading
from ..models.preprocess import ImageSpec
from ..models.sampling import caption_seed
from ..models.scoring import Caption
from ..store import fs as storage
from ..store import writer

log = logging.getLogger(__name__)

READ_TRIES = 4  # attempts per object read within a run
READ_BACKOFF_S = 0.5  # first retry delay; doubles each time, with jitter

def read_and_decode(
    batch: dict[str, np.ndarray], images: dict[str, ImageSpec], store: StorageConfig, limits: DecodeConfig
) -> dict[str, np.ndarray]:
    """Read each object and decode it once into every model's input (``images``: column -> spec).

    Failures keep zero images and an error, so the batch goes on. Objects over the size cap are never read, and
    decoding happens in a bounded child process (``sandbox``), so no single file can stall or sink the worker.
    """
    decoder = sandbox.shared(limits.formats, limits.max_pixels, limits.timeout_s, limits.memory_mb)
    max_bytes = limits.max_file_mb * 2**20
    n = len(batch[schema.URI])
    columns = list(images)
    pixels = {c: np.zeros((n, s.resize.height, s.resize.width, 3), dtype=np.uint8) for c, s in images.items()}
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    error_type = np.full(n, None, dtype=object)
    error = np.full(n, None, dtype=object)
    sizes = np.array([_plain(v) for v in batch[schema.SIZE]], dtype=object)
    etags = np.array([_plain(v) for v in batch[schema.ETAG]], dtype=object)
    for i, uri in enumerate(batch[schema.URI]):
        try:
            if etags[i] is None:  # a manifest that named only the URI: record the identity that was read
                sizes[i], etags[i] = storage.identity(uri, store.options(uri))
            if sizes[i] is not None and sizes[i] > max_bytes:
                error_type[i], error[i] = "too_large", _too_large(sizes[i], limits)
                continue
            data = _read(uri, store, max_bytes + 1)
        except FileNotFoundError as exc:
            error_type[i], error[i] = "not_found", f"object is gone: {exc}"
            continue
        except PermissionError as exc:
            error_type[i], error[i] = "forbidden", f"no permission to read the object: {exc}"
            continue
        except Exception as exc:  # any other store failure is this image's error, not the batch's
            error_type[i], error[i] = "read_error", f"{type(exc).__name__}: {exc}"
            continue
        if len(data) > max_bytes:  # grew since it was listed
            error_type[i], error[i] = "too_large", _too_large(len(data), limits)
            continue
        if sizes[i] is not None and len(data) != sizes[i]:
            error_type[i], error[i] = "changed", f"object is {len(data)} bytes now, {sizes[i]} when listed"
            continue
        result = decoder.decode(data, [images[c].resize for c in columns])
        if isinstance(result, DecodeFailure):
            error_type[i], error[i] = result.error_type, result.message
            continue
        for column, array in zip(columns, result.pixels):
            pixels[column][i] = array
        width[i], height[i] = result.width, result.height
    passed = {key: batch[key] for key in batch if key in (schema.URI, schema.LANGS, schema.ATTEMPT, schema.SOURCE_CAPTION)}
    return {**passed, schema.SIZE: sizes, schema.ETAG: etags, **pixels, schema.WIDTH: width, schema.HEIGHT: height,
            schema.ERROR_TYPE: error_type, schema.ERROR: error}


def _too_large(size: int, limits: DecodeConfig) -> str:
    return f"file is {size / 2**20:,.1f} MiB, over the {limits.max_file_mb} MiB limit (--max-image-mb)"


def _read(uri: str, store: StorageConfig, limit: int) -> bytes:  # type: ignore[return]
    """At most ``limit`` bytes of the object; store hiccups are retried with jittered exponential backoff (on top
    of the S3 client's own retries), a missing or forbidden object is not."""
    for attempt in range(READ_TRIES):
        try:
            return storage.read_bytes(uri, store.options(uri), limit=limit)
        except (FileNotFoundError, PermissionError):
            raise
        except Exception:
            if attempt == READ_TRIES - 1:
                raise
            time.sleep(READ_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))


class CaptionFailed(RuntimeError):
    """The model cannot caption a batch in which no single image can be captioned either: the run must stop
    rather than write an error row for every image of the archive."""


class CaptionActor:
    """Holds the run's models (captioner, translators, scorer); Ray Data calls it with decoded batches."""

    def __init__(self, config: RunConfig, run_id: str, num_threads: int) -> None:
        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, num_threads))
        opts = config.storage.options
        other = config.model.helper
        self.models = generate.Models(
            captioner=loading.load(config.model, opts(config.model.name)),
            translators={lang: loading.load_translator(other(name), opts(name)) for lang, name in config.translate},
            scorer=loading.load_scorer(other(config.clip_model), opts(config.clip_model)) if config.clip_model else None,
            source_language=config.source_language,
        )
        self.config = config
        self.run_id = run_id
        self.fingerprints = fingerprints(config)
        log.info("loaded %s on %s (%s)", config.model.name, self.models.captioner.device, self.models.captioner.dtype)

    def _describe(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> list[dict[str, Caption]]:
        return generate.describe(
            self.models,
            batch[schema.PIXELS][rows],
            [str(langs).split(",") for langs in batch[schema.LANGS][rows]],
            self.config.generation,
            clip_pixels=batch[schema.CLIP_PIXELS][rows] if schema.CLIP_PIXELS in batch else None,
            source_captions=list(batch[schema.SOURCE_CAPTION][rows]) if schema.SOURCE_CAPTION in batch else None,
            num_candidates=self.config.num_candidates,
            seeds=[caption_seed(str(uri), self.config.generation.seed) for uri in batch[schema.URI][rows]],
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # An all-null column reaches us as NaN floats, so "no error" is anything that is not a message.
        error_type = np.array([e if isinstance(e, str) else None for e in batch[schema.ERROR_TYPE]], dtype=object)
        error = np.array([e if isinstance(e, str) else None for e in batch[schema.ERROR]], dtype=object)
        ok = np.array([e is None for e in error_type], dtype=bool)
        rows_ok = np.flatnonzero(ok)
        try:
            captions = self._describe(batch, rows_ok)
        except Exception as exc:  # a batch that cannot be captioned is retried image by image
            log.warning("captioning a batch of %d failed (%s); retrying image by image", len(rows_ok), exc)
            captions = []
            for i in rows_ok:
                try:
                    captions += self._describe(batch, np.array([i]))
                except Exception as single:
                    ok[i] = False
                    error_type[i], error[i] = "caption_error", f"{type(single).__name__}: {single}"
            if not captions:  # not one image went through: the model is what fails, and every batch would
                raise CaptionFailed(f"{type(exc).__name__}: {exc}") from exc
        rows = []
        done = iter(captions)
        for i in range(len(ok)):
            row = {key: _plain(batch[key][i]) for key in schema.IDENTITY}
            row[schema.RUN_ID] = self.run_id
            if ok[i]:
                row[schema.RESULTS] = [_result(lang, c, self.fingerprints[lang]) for lang, c in next(done).items()]
                row.update({
                    schema.WIDTH: int(batch[schema.WIDTH][i]),
                    schema.HEIGHT: int(batch[schema.HEIGHT][i]),
                    schema.MODEL: self.config.model.name,
                    schema.MODEL_REVISION: self.config.model.revision,
                })
            else:
                row.update({schema.ERROR_TYPE: error_type[i], schema.ERROR: error[i],
                            schema.ATTEMPT: int(batch[schema.ATTEMPT][i]) + 1})
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT)


def _result(lang: str, c: Caption, fingerprint: str) -> dict:
    return {schema.LANG: lang, schema.CAPTION: c.text, schema.SCORE: c.score, schema.PRODUCER: c.producer,
            schema.SOURCE_LANG: c.source_lang, schema.CLIP_SCORE: c.clip_score, schema.NUM_CANDIDATES: c.candidates,
            schema.FINGERPRINT: fingerprint}


def write(batch: pa.Table, output: str, store: StorageConfig) -> pa.Table:
    """Write one shard and hand its counts back to the driver for progress and the summary."""
    counts = writer.write_shard(batch, output, store.options(output))
    return pa.Table.from_pylist([counts])


def _plain(value):
    """numpy scalars and NaN-filled nulls back to Python values for Arrow."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
