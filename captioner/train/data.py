"""Training rows in memory and the batches made of them.

The synthetic sets are small and re-read every epoch, so every row is decoded once up front; the
held-out split hashes the image bytes so it is the same on every worker and in every run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import BaseImageProcessor, PreTrainedTokenizerFast

from ..config import DEFAULT_FORMATS, DecodeConfig
from ..media.image import DecodeFailure, Resize, decode
from ..models.family import code_languages, token_languages
from ..store import fs as storage

MAX_PIXELS = DecodeConfig.max_pixels

logger = logging.getLogger(__name__)


@dataclass
class Examples:
    """Decoded training rows, held in memory: the synthetic sets are small and re-read every epoch."""

    pixels: torch.Tensor  # (n, 3, H, W) uint8, already resized to the model input
    captions: list[str]
    langs: list[str]
    val: torch.Tensor  # (n,) bool, True for held-out rows


def read_rows(url: str, columns: Sequence[str] = ("image", "caption", "lang"), options: dict | None = None) -> pa.Table:
    """`columns` of a Parquet file, or of every Parquet file under a folder, local or at an fsspec URL."""
    fs, path = storage.filesystem(url, options)
    files = sorted(fs.find(path, withdirs=False)) if fs.isdir(path) else [path]
    files = [f for f in files if f.endswith(".parquet")]
    if not files:
        raise FileNotFoundError(f"no Parquet files at {url}")
    tables = []
    for file in files:
        with fs.open(file, "rb") as f:
            tables.append(pq.read_table(f, columns=list(columns)))
    return pa.concat_tables(tables)


def _held_out(image: bytes, fraction: float) -> bool:
    """Split by a hash of the image bytes: stable across runs and workers, and leak-free across languages."""
    return int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "big") / 2**64 < fraction


def load_examples(url: str, resize: Resize, val_fraction: float, options: dict | None = None) -> Examples:
    """Read all rows and decode each image as the captioning job does (the same code, the processor's resize
    rule); rows whose image does not decode are skipped with a warning."""
    table = read_rows(url, options=options)
    pixels, captions, langs, val = [], [], [], []
    failed = 0
    for image, text, lang in zip(*(table.column(c).to_pylist() for c in ("image", "caption", "lang"))):
        decoded = decode(image, [resize], formats=DEFAULT_FORMATS, max_pixels=MAX_PIXELS)
        if isinstance(decoded, DecodeFailure):
            failed += 1
            continue
        pixels.append(torch.from_numpy(decoded.pixels[0].copy()).permute(2, 0, 1))  # (3, H, W)
        captions.append(text)
        langs.append(lang)
        val.append(_held_out(image, val_fraction))
    if failed:
        logger.warning("skipped %d of %d rows whose image did not decode", failed, len(table))
    if not pixels:
        raise ValueError(f"no decodable images in {url}")
    return Examples(torch.stack(pixels), captions, langs, torch.tensor(val))


def language_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The token that picks each language, as the captioning job finds it: our ``<|xx|>`` tokens, or else the
    decoder's mBART-50 language codes (ISO ``de`` is ``de_DE``)."""
    return token_languages(tokenizer) or code_languages(tokenizer)


class Batcher:
    """Turns rows into model inputs: normalised pixels and dynamically padded labels."""

    def __init__(
        self, examples: Examples, tokenizer: PreTrainedTokenizerFast, processor: BaseImageProcessor, max_tokens: int
    ) -> None:
        self.examples = examples
        self.tokenizer = tokenizer
        self.mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
        self.rescale = processor.rescale_factor if processor.do_rescale else 1.0
        encoded = tokenizer(examples.captions, add_special_tokens=False).input_ids
        language = language_ids(tokenizer)
        self.labels = [[language[lang], *ids[:max_tokens], tokenizer.eos_token_id]
                       for lang, ids in zip(examples.langs, encoded)]

    def pixels(self, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(B, 3, H, W) float pixels of `rows`, normalised as the image processor would."""
        x = self.examples.pixels[rows].to(device).float() * self.rescale  # (B, 3, H, W)
        return (x - self.mean.to(device)) / self.std.to(device)

    def labels_for(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) labels padded to the longest in the batch with -100, which the loss ignores, and the
        (B, T) mask of the decoder inputs they imply (the start token, then every label but the last)."""
        sequences = [self.labels[i] for i in rows.tolist()]
        width = max(len(s) for s in sequences)
        labels = torch.tensor([s + [-100] * (width - len(s)) for s in sequences], device=device)
        mask = torch.cat([torch.ones_like(labels[:, :1]), (labels[:, :-1] != -100).long()], dim=1)
        return labels, mask

    def prompts(self, rows: torch.Tensor, start: int, device: torch.device) -> torch.Tensor:
        """(B, 2) decoder prompts [start, language token] that pick each row's language at generation."""
        return torch.tensor([[start, self.labels[i][0]] for i in rows.tolist()], device=device)


def epoch_batches(
    rows: torch.Tensor, batch_size: int, seed: int, epoch: int, rank: int, world: int
) -> list[torch.Tensor]:
    """This worker's batches for one epoch: the same shuffle everywhere, a disjoint equal share per worker."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    shuffled = rows[torch.randperm(len(rows), generator=generator)]
    per_worker = len(shuffled) // world // batch_size * batch_size  # equal step counts keep DDP in lock-step
    mine = shuffled[rank::world][:per_worker]
    return list(mine.split(batch_size))
