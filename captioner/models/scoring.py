"""Scores of generated text (mean token log-probabilities, CLIPScore) and best-of-N by CLIPScore. No Ray here.

``score`` is the mean log-probability per generated token (the end-of-text token included, any
start or language prompt excluded) under the model that wrote the text: length-normalised, so short
and long captions compare, and the same for greedy, beam and sampled text because it comes from the
model's raw logits for the final tokens rather than from the search's internal (processed, length-
penalised) scores. Greedy and sampled search keep each step's logits, which belong to the one sequence
that step extends, so no second pass is needed; beam search reorders its beams, so its final tokens get
one teacher-forced pass.

``clip_score`` is CLIPScore (Hessel et al. 2021): 2.5 * max(cos(image, text), 0).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..schema import NATIVE
from .loading import Scorer
from .preprocess import pixel_values


@dataclass(frozen=True)
class Caption:
    text: str
    score: float
    producer: str = NATIVE  # "native" or the translation model that wrote it
    source_lang: str | None = None  # for translations, the language translated from
    clip_score: float | None = None
    candidates: int = 1  # how many captions this one was chosen from


def mean_logprob(logits: torch.Tensor, sequences: torch.Tensor, prompt_len: int, ends: Sequence[int]) -> list[float]:
    """Mean log-probability of the generated tokens of (B, L) ``sequences`` (after a ``prompt_len`` prompt), up to
    and including the first end token, from the (B, L-1, V) teacher-forced logits of each next token."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_lp = logprobs.gather(-1, sequences[:, 1:, None]).squeeze(-1)[:, prompt_len - 1:]  # (B, T)
    return _mean_until_end(token_lp, sequences[:, prompt_len:], ends)


def mean_logprob_of_steps(step_logits: Sequence[torch.Tensor], generated: torch.Tensor,
                          ends: Sequence[int]) -> list[float]:
    """The same mean from the raw logits ``generate`` kept, one (B, V) tensor per generated token."""
    token_lp = torch.stack([
        logits.float().gather(-1, generated[:, t, None]).squeeze(-1) - torch.logsumexp(logits.float(), dim=-1)
        for t, logits in enumerate(step_logits)
    ], dim=1)  # (B, T)
    return _mean_until_end(token_lp, generated, ends)


def _mean_until_end(token_lp: torch.Tensor, generated: torch.Tensor, ends: Sequence[int]) -> list[float]:
    """Mean of (B, T) token log-probabilities up to and including each row's first end token."""
    is_end = torch.isin(generated, torch.tensor(list(ends), device=generated.device)).long()
    after_end = (is_end.cumsum(dim=1) - is_end) > 0  # tokens past the first end are padding
    mask = (~after_end).float()
    return ((token_lp * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()


@torch.inference_mode()
def clip_scores(scorer: Scorer, pixels: np.ndarray, texts: Sequence[str]) -> list[float]:
    """CLIPScore of each (image, text) pair: 2.5 * max(cosine of the projected embeddings, 0)."""
    x = pixel_values(pixels, scorer.image, scorer.device, scorer.dtype)
    tokens = scorer.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                              max_length=scorer.model.config.text_config.max_position_embeddings).to(scorer.device)
    image = _features(scorer.model.get_image_features(pixel_values=x))  # (B, E)
    text = _features(scorer.model.get_text_features(**tokens))  # (B, E)
    cosine = F.cosine_similarity(image.float(), text.float(), dim=-1)
    return (2.5 * cosine.clamp(min=0)).tolist()


def _features(output) -> torch.Tensor:
    """Projected embeddings, whether this transformers returns a tensor or an output with ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def best_of(scorer: Scorer, clip_pixels: np.ndarray, candidates: list[Caption], n: int) -> list[Caption]:
    """Keep, per image, the candidate the CLIP model finds closest to the image."""
    clip = clip_scores(scorer, np.repeat(clip_pixels, n, axis=0), [c.text for c in candidates])
    best = []
    for start in range(0, len(candidates), n):
        pick = start + int(np.argmax(clip[start:start + n]))
        best.append(replace(candidates[pick], clip_score=clip[pick], candidates=n))
    return best


def add_clip_scores(scorer: Scorer, clip_pixels: np.ndarray, results: list[dict[str, Caption]]) -> None:
    """Fill in the CLIP score of every caption that has none yet (best-of-N already set theirs)."""
    pending = [(i, lang) for i, found in enumerate(results) for lang, c in found.items() if c.clip_score is None]
    if not pending:
        return
    rows = [i for i, _ in pending]
    scores = clip_scores(scorer, clip_pixels[rows], [results[i][lang].text for i, lang in pending])
    for (i, lang), score in zip(pending, scores):
        results[i][lang] = replace(results[i][lang], clip_score=score)
