"""The synthetic dataset file: rendered scenes with their captions as Parquet rows (image bytes, caption, lang).

It is the format the training loop reads, so the demo model's data and real (image, caption) pairs
go through the same code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..store import fs as storage
from .grammar import caption
from .scenes import LANGUAGES, encode, render, scenes

logger = logging.getLogger(__name__)

PARQUET_SCHEMA = pa.schema([("image", pa.binary()), ("caption", pa.string()), ("lang", pa.string())])


def write_parquet(
    url: str,
    n: int,
    seed: int,
    size: int = 128,
    image_format: str = "jpeg",
    languages: Sequence[str] = LANGUAGES,
    one_shape_fraction: float = 0.5,
    row_group_size: int = 1000,
    options: dict | None = None,
) -> int:
    """Write `n` scenes as one Parquet file (image bytes, caption, lang) to a local path or fsspec URL.

    Scene i is captioned in languages[i % len(languages)], so every language sees every kind of
    scene while each image is encoded only once. `options` are fsspec storage options (e.g. an S3
    endpoint). Returns the number of rows written.
    """
    unknown = set(languages) - set(LANGUAGES)
    if unknown:
        raise ValueError(f"no synthetic captions for {sorted(unknown)}; choose from {', '.join(LANGUAGES)}")
    fs, path = storage.filesystem(url, options)
    if storage.is_local(fs):
        fs.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f, pq.ParquetWriter(f, PARQUET_SCHEMA) as writer:
        rows: dict[str, list] = {"image": [], "caption": [], "lang": []}
        for i, scene in enumerate(scenes(n, seed, one_shape_fraction)):
            lang = languages[i % len(languages)]
            rows["image"].append(encode(render(scene, size), image_format))
            rows["caption"].append(caption(scene, lang))
            rows["lang"].append(lang)
            if len(rows["image"]) == row_group_size:
                writer.write_table(pa.table(rows, schema=PARQUET_SCHEMA))
                rows = {"image": [], "caption": [], "lang": []}
        if rows["image"]:
            writer.write_table(pa.table(rows, schema=PARQUET_SCHEMA))
    logger.info("wrote %d synthetic scenes to %s", n, url)
    return n
