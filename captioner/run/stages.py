"""The thin layer where Ray Data meets the pure code: batch adapters and the caption actor.

Each stage takes and returns plain column batches. Failures become rows with ``error_type`` set,
so one bad image never fails a batch. The read + decode stage lives in ``reading``, the write stage in ``writing``:
neither imports torch, so the CPU workers start fast and stay small.
"""

import logging
import os
import uuid
import warnings

import numpy as np
import pyarrow as pa
import ray
import torch

from .. import schema
from ..config import RunConfig
from ..models import generate, loading
from ..models.sampling import caption_seed
from ..models.scoring import Caption
from ..store import state
from .reading import plain

log = logging.getLogger(__name__)

DEVICE_FAILURE_EXIT = 75  # how a caption actor with a broken device ends itself; Ray then restarts it


class CaptionFailed(RuntimeError):
    """The model cannot caption a batch in which no single image can be captioned either: the run must stop
    rather than write an error row for every image of the archive."""


def is_device_failure(exc: BaseException) -> bool:
    """A CUDA error other than running out of memory: the process's CUDA context is likely broken for good."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return (accelerator_error is not None and isinstance(exc, accelerator_error)) or (
        isinstance(exc, RuntimeError) and any(m in str(exc) for m in ("CUDA error", "CUBLAS_STATUS", "cuDNN error")))


class CaptionActor:
    """Holds the run's models (captioner, translators, scorer); Ray Data calls it with decoded batches."""

    def __init__(self, config: RunConfig, run_id: str, num_threads: int, fingerprints: dict[str, str]) -> None:
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
        self.fingerprints = fingerprints  # the driver's, so every actor writes the same whatever its paths
        self.restarted = _restarted()
        self.captioned = False
        self.name, self.reported = uuid.uuid4().hex[:12], 0  # this actor's file of fast-path checks, and its length
        log.info("loaded %s on %s (%s)", config.model.name, self.models.captioner.device, self.models.captioner.dtype)

    def _halving(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> list[dict[str, Caption]]:
        """Caption ``rows``; out of memory, empty the cache and caption each half, down to one image. A CUDA error
        ends this process, so that Ray restarts the actor with a fresh context and retries the batch."""
        try:
            captions = self._describe(batch, rows)
            self.captioned = True
            return captions
        except torch.OutOfMemoryError:
            if len(rows) <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory captioning %d images; trying halves", len(rows))
            half = len(rows) // 2
            return self._halving(batch, rows[:half]) + self._halving(batch, rows[half:])
        except Exception as exc:
            if not is_device_failure(exc):
                raise
            if self.restarted and not self.captioned:  # the retried batch fails too: the device or model is broken
                raise CaptionFailed(f"the device fails again after a restart: {type(exc).__name__}: {exc}") from exc
            log.error("device failure, restarting the caption actor: %s", exc)
            logging.shutdown()
            os._exit(DEVICE_FAILURE_EXIT)

    def _describe(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> list[dict[str, Caption]]:
        return generate.describe(
            self.models,
            batch[schema.PIXELS][rows],
            [str(langs).split(",") for langs in batch[schema.LANGS][rows]],
            self.config.generation,
            clip_pixels=batch[schema.CLIP_PIXELS][rows] if schema.CLIP_PIXELS in batch else None,
            source_captions=list(batch[schema.SOURCE_CAPTION][rows]) if schema.SOURCE_CAPTION in batch else None,
            num_candidates=self.config.num_candidates,
            seeds=[caption_seed(_key(batch, i), self.config.generation.seed) for i in rows],
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        # An all-null column reaches us as NaN floats, so "no error" is anything that is not a message.
        error_type = np.array([e if isinstance(e, str) else None for e in batch[schema.ERROR_TYPE]], dtype=object)
        error = np.array([e if isinstance(e, str) else None for e in batch[schema.ERROR]], dtype=object)
        ok = np.array([e is None for e in error_type], dtype=bool)
        rows_ok = np.flatnonzero(ok)
        try:
            captions = self._halving(batch, rows_ok)
        except CaptionFailed:
            raise
        except Exception as exc:  # a batch that cannot be captioned is retried image by image
            log.warning("captioning a batch of %d failed (%s); retrying image by image", len(rows_ok), exc)
            captions = []
            for i in rows_ok:
                try:
                    captions += self._halving(batch, np.array([i]))
                except CaptionFailed:
                    raise
                except Exception as single:
                    ok[i] = False
                    error_type[i], error[i] = "caption_error", f"{type(single).__name__}: {single}"
            if not captions:  # not one image went through: the model is what fails, and every batch would
                raise CaptionFailed(f"{type(exc).__name__}: {exc}") from exc
        rows = []
        done = iter(captions)
        for i in range(len(ok)):
            row = {key: plain(batch[key][i]) for key in schema.IDENTITY}
            row[schema.RUN_ID] = self.run_id
            row[schema.COUNTED] = bool(batch[schema.COUNTED][i]) if schema.COUNTED in batch else True
            if schema.SEGMENT in batch and batch[schema.SEGMENT][i] >= 0:  # a video segment, captioned or not
                row.update({key: plain(batch[key][i]) for key in (schema.SEGMENT, schema.START_S, schema.END_S,
                                                                  schema.SEGMENTS)})
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
        self._report_checks()
        return pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT)

    def _report_checks(self) -> None:
        """New checks of the fast path go to the run's folder, where the driver counts them for the run record."""
        checks = self.models.captioner.checks
        if len(checks) > self.reported:
            state.write_fast_checks(self.config.output, self.run_id, self.name, checks,
                                    self.config.storage.options(self.config.output))
            self.reported = len(checks)


def _restarted() -> bool:
    """Whether this process is a Ray restart of the caption actor (Ray's own check reads a deprecated property)."""
    context = ray.get_runtime_context() if ray.is_initialized() else None
    if not (context and context.get_actor_id()):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(context.was_current_actor_reconstructed)


def _key(batch: dict[str, np.ndarray], i: int) -> str:
    """What names row i's captions for sampling: the image's URI, and the segment for a video."""
    segment = int(batch[schema.SEGMENT][i]) if schema.SEGMENT in batch else -1
    return str(batch[schema.URI][i]) + (f"#{segment}" if segment >= 0 else "")


def _result(lang: str, c: Caption, fingerprint: str) -> dict:
    return {schema.LANG: lang, schema.CAPTION: c.text, schema.SCORE: c.score, schema.PRODUCER: c.producer,
            schema.SOURCE_LANG: c.source_lang, schema.CLIP_SCORE: c.clip_score, schema.NUM_CANDIDATES: c.candidates,
            schema.FINGERPRINT: fingerprint}
