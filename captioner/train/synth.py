"""The synthetic dataset file (rendered scenes with their captions as Parquet rows: image bytes, caption,
lang), and synthetic videos of the same scenes moving.

It is the format the training loop reads, so the demo model's data and real (image, caption) pairs
go through the same code.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq

from ..store import fs as storage
from .grammar import caption
from .scenes import LANGUAGES, Scene, encode, render, scenes

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


def drift(scene: Scene, t: float) -> Scene:
    """The scene ``t`` (0..1) of the way through a clip: every shape slid along a small circle, so frames differ
    while what the caption says (shapes, colours, where one is of the other) stays true."""
    dx, dy = 0.05 * math.cos(2 * math.pi * t), 0.05 * math.sin(2 * math.pi * t)
    shapes = tuple(replace(s, box=(s.box[0] + dx, s.box[1] + dy, s.box[2] + dx, s.box[3] + dy)) for s in scene.shapes)
    return replace(scene, shapes=shapes)


def write_video(path: str, scene: Scene, seconds: float = 12.0, fps: int = 8, size: int = 128) -> str:
    """An H.264 MP4 of ``scene`` moving for ``seconds``: the demo's video input."""
    import av

    frames = round(seconds * fps)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = render(drift(scene, i / frames), size)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    logger.info("wrote a %g s synthetic video to %s", seconds, path)
    return path
