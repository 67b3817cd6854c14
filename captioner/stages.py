"""The thin layer where Ray Data meets the pure code: batch adapters and the caption actor.

Each stage takes and returns plain column batches. Failures become rows with ``error_type`` set,
so one bad image never fails a batch.
"""

import logging
import zlib

import numpy as np
import pyarrow as pa
import torch

from . import generate, images, model, schema, storage, writer
from .config import GenerationConfig, ModelConfig, StorageConfig

log = logging.getLogger(__name__)

def read_and_decode(batch: dict[str, np.ndarray], image: model.ImageSpec, store: StorageConfig) -> dict[str, np.ndarray]:
    """Read each object and decode it to the model's input size; failures keep a zero image and an error."""
    n = len(batch[schema.URI])
    pixels = np.zeros((n, image.height, image.width, 3), dtype=np.uint8)
    width = np.zeros(n, dtype=np.int32)
    height = np.zeros(n, dtype=np.int32)
    error_type = np.full(n, None, dtype=object)
    error = np.full(n, None, dtype=object)
    for i, uri in enumerate(batch[schema.URI]):
        try:
            data = storage.read_bytes(uri, store.options(uri))
        except Exception as exc:  # any store failure is this image's error, not the batch's
            error_type[i], error[i] = "read_error", f"{type(exc).__name__}: {exc}"
            continue
        result = images.decode(data, (image.height, image.width))
        if isinstance(result, images.DecodeFailure):
            error_type[i], error[i] = result.error_type, result.message
        else:
            pixels[i], width[i], height[i] = result.pixels, result.width, result.height
    return {
        **{key: batch[key] for key in (*schema.IDENTITY, schema.LANGS)},
        schema.PIXELS: pixels,
        schema.WIDTH: width,
        schema.HEIGHT: height,
        schema.ERROR_TYPE: error_type,
        schema.ERROR: error,
    }


class CaptionActor:
    """Holds one loaded captioner; Ray Data calls it with decoded batches."""

    def __init__(
        self,
        model_config: ModelConfig,
        generation: GenerationConfig,
        store: StorageConfig,
        run_id: str,
        num_threads: int,
    ) -> None:
        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, num_threads))
        self.captioner = model.load(model_config, store.options(model_config.name))
        self.generation = generation
        self.run_id = run_id
        log.info("loaded %s on %s (%s)", model_config.name, self.captioner.device, self.captioner.dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ok = np.array([e is None for e in batch[schema.ERROR_TYPE]], dtype=bool)
        requests = [str(langs).split(",") for langs in batch[schema.LANGS][ok]]
        seed = None
        if self.generation.do_sample:  # same images, same seed: sampled captions are reproducible
            seed = zlib.crc32("\n".join(batch[schema.URI][ok]).encode(), self.generation.seed)
        captions = generate.caption(self.captioner, batch[schema.PIXELS][ok], requests, self.generation, seed)
        rows = []
        done = iter(captions)
        for i in range(len(ok)):
            row = {key: _plain(batch[key][i]) for key in schema.IDENTITY}
            row[schema.RUN_ID] = self.run_id
            if ok[i]:
                row[schema.RESULTS] = [
                    {schema.LANG: lang, schema.CAPTION: c.text, schema.SCORE: c.score} for lang, c in next(done).items()
                ]
                row.update({
                    schema.WIDTH: int(batch[schema.WIDTH][i]),
                    schema.HEIGHT: int(batch[schema.HEIGHT][i]),
                    schema.MODEL: self.captioner.name,
                    schema.MODEL_REVISION: self.captioner.revision,
                })
            else:
                row.update({schema.ERROR_TYPE: batch[schema.ERROR_TYPE][i], schema.ERROR: batch[schema.ERROR][i]})
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT)


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
