"""Sampling with a random stream per caption: the same ``--seed`` gives an image the same caption whatever batch it
lands in, on resume and on retry. No Ray here.

transformers draws every row of a batch from one generator, so a sampled caption depends on its batch companions.
Here a logits processor draws each row's next token from that row's own generator, after temperature and nucleus
filtering, and leaves only that token possible; ``generate`` then runs greedy and takes exactly that token. The raw
logits ``generate`` keeps are untouched, so scores are computed as for any caption.
"""

import zlib
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class RowSampler(LogitsProcessor):
    """Temperature and top-p sampling, row r drawing from ``generators[r]``."""

    def __init__(self, generators: Sequence[torch.Generator], temperature: float, top_p: float) -> None:
        self.generators = list(generators)
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # (R, V)
        if self.top_p < 1.0:
            ranked, order = probs.sort(dim=-1, descending=True)
            ranked[ranked.cumsum(dim=-1) - ranked >= self.top_p] = 0.0  # the smallest set holding top_p of the mass
            probs = torch.zeros_like(probs).scatter(-1, order, ranked)
        picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])  # (R, 1)
        return torch.full_like(scores, float("-inf")).scatter(-1, picks, 0.0)


def row_generators(seeds: Sequence[int], candidates: int, device: torch.device) -> list[torch.Generator]:
    """One generator per (seed, candidate), rows in the order generate returns candidates: each seed's together."""
    return [torch.Generator(device=device).manual_seed(zlib.crc32(str(k).encode(), seed))
            for seed in seeds for k in range(candidates)]


def caption_seed(key: str, seed: int) -> int:
    """The seed of one caption, from what names it (an image's URI, a language) and the run's ``--seed``."""
    return zlib.crc32(key.encode(), seed)
