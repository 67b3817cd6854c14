"""Batched captioning in every family, then translation and CLIP scores: what a caption actor runs. No Ray here.

Scores and best-of-N come from ``scoring``: see there what ``score`` and ``clip_score`` mean.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import LogitsProcessorList

from ..config import GenerationConfig
from . import family, fast, scoring
from .loading import Captioner, Loaded, Scorer
from .preprocess import pixel_values
from .sampling import RowSampler, caption_seed, row_generators
from .scoring import Caption
from .translation import translate

@dataclass
class Models:
    """What one caption actor holds."""

    captioner: Captioner
    translators: dict[str, Loaded] = field(default_factory=dict)  # target language -> translation model
    scorer: Scorer | None = None
    source_language: str = "en"


@torch.inference_mode()
def describe(
    models: Models,
    pixels: np.ndarray,
    requests: Sequence[Sequence[str]],
    generation: GenerationConfig,
    *,
    clip_pixels: np.ndarray | None = None,
    source_captions: Sequence[str | None] | None = None,
    num_candidates: int = 1,
    seeds: Sequence[int] | None = None,
) -> list[dict[str, Caption]]:
    """Every caption the batch asks for: native languages first, then translations of the source caption,
    then CLIP scores. ``source_captions[i]`` is image i's stored source caption when this run does not write it.
    """
    native = [[lang for lang in langs if lang not in models.translators] for langs in requests]
    results = caption(models.captioner, pixels, native, generation, seeds=seeds, num_candidates=num_candidates,
                      scorer=models.scorer, clip_pixels=clip_pixels)
    for lang, translator in models.translators.items():
        rows = [i for i, langs in enumerate(requests) if lang in langs]
        sources = [_source(results[i], source_captions, i, models.source_language) for i in rows]
        for i, text in zip(rows, translate(translator, sources, models.source_language, lang, generation)):
            results[i][lang] = replace(text, source_lang=models.source_language)
    if models.scorer is not None:
        scoring.add_clip_scores(models.scorer, clip_pixels, results)
    return results


def _source(found: dict[str, Caption], stored: Sequence[str | None] | None, i: int, lang: str) -> str:
    if lang in found:
        return found[lang].text
    if stored is None or stored[i] is None:
        raise ValueError(f"image {i} asks for a translation but has no {lang} caption to translate")
    return stored[i]


@torch.inference_mode()
def caption(
    captioner: Captioner,
    pixels: np.ndarray,
    requests: Sequence[Sequence[str]],
    generation: GenerationConfig,
    seeds: Sequence[int] | None = None,
    num_candidates: int = 1,
    scorer: Scorer | None = None,
    clip_pixels: np.ndarray | None = None,
) -> list[dict[str, Caption]]:
    """Caption each image in each language it asks for; the encoder runs once per image.

    With ``num_candidates`` > 1, that many captions are generated per image and language (beam search,
    or sampling when sampling is on) and the one with the best CLIP score under ``scorer`` is kept.
    Sampling draws image i's captions from ``seeds[i]`` (and the language), whatever else is in the batch.
    """
    results: list[dict[str, Caption]] = [{} for _ in requests]
    calls = one_call_each(captioner.info.languages, requests)
    if not calls:
        return results
    x = pixel_values(pixels, captioner.info.image, captioner.device, captioner.dtype)  # (B, 3, H, W)
    encoded = captioner.info.family.encode(captioner.model, x)  # (B, ...): once per image, whatever the languages
    for pairs in calls:
        rows = [i for i, _ in pairs]
        prompts = [captioner.info.languages[lang] for _, lang in pairs]
        row_seeds = [caption_seed(lang, seeds[i] if seeds is not None else generation.seed) for i, lang in pairs]
        texts = _generate(captioner, family.rows(encoded, torch.tensor(rows, device=captioner.device)), prompts,
                          generation, num_candidates, row_seeds)  # (len(pairs) * n)
        if num_candidates > 1:
            texts = scoring.best_of(scorer, clip_pixels[rows], texts, num_candidates)
        for (i, lang), text in zip(pairs, texts):
            results[i][lang] = text
    return results


def one_call_each(prompts: dict[str, tuple[int, ...]],
                  requests: Sequence[Sequence[str]]) -> list[list[tuple[int, str]]]:
    """The (image, language) pairs of a batch, grouped into one ``generate`` call per prompt length: a device is
    busiest with one large batch, and prompts of one length need no padding, so each caption is token for token
    what a call of its language alone writes. Languages whose prompts differ in length (chat instructions) take a
    call each."""
    calls: dict[int, list[tuple[int, str]]] = {}
    for lang in dict.fromkeys(lang for langs in requests for lang in langs):
        calls.setdefault(len(prompts[lang]), []).extend((i, lang) for i, langs in enumerate(requests) if lang in langs)
    return list(calls.values())


def _search(generation: GenerationConfig, num_candidates: int, seeds: Sequence[int],
            device: torch.device) -> tuple[dict, int]:
    """generate() settings for greedy, beam or sampling, and how many times to repeat each input first.

    Sampling without beams runs as greedy over a ``RowSampler`` that draws each caption from its own seed,
    candidates as repeated inputs; sampled beam search is transformers' own, seeded by the batch's first image.
    """
    settings = {"max_new_tokens": generation.max_new_tokens}
    if not generation.do_sample:
        return {**settings, "num_beams": max(generation.num_beams, num_candidates),
                "num_return_sequences": num_candidates}, 1
    temperature, top_p = generation.temperature or 1.0, generation.top_p or 1.0
    if generation.num_beams == 1:
        generators = row_generators(seeds, num_candidates, device)
        return {**settings, "num_beams": 1, "do_sample": False,
                "logits_processor": LogitsProcessorList([RowSampler(generators, temperature, top_p)])}, num_candidates
    torch.manual_seed(seeds[0])
    # top_k=0: nucleus sampling as documented, without transformers' default top-50 cut
    return {**settings, "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0,
            "num_beams": generation.num_beams, "num_return_sequences": num_candidates}, 1


def _generate(captioner: Captioner, encoded: family.Encoded, prompts: Sequence[tuple[int, ...]],
              generation: GenerationConfig, num_candidates: int, seeds: Sequence[int]) -> list[Caption]:
    """Each row's caption (``num_candidates`` each, a row's together) from its own prompt, all of one length."""
    kind, model = captioner.info.family, captioner.model
    search, times = _search(generation, num_candidates, seeds, captioner.device)
    encoded = family.repeat(encoded, times)
    prompt = torch.tensor(prompts, device=captioner.device).repeat_interleave(times, dim=0)  # (B, P)
    stepwise = search["num_beams"] == 1  # each step's logits belong to the sequence it extends
    kwargs = dict(return_dict_in_generate=True, output_logits=stepwise, **search)
    if stepwise and not generation.do_sample and fast.wanted(generation.fast, captioner.device):
        out = fast.generate(captioner, encoded, prompt, **kwargs)  # greedy: static cache, compiled on CUDA
    else:
        out = kind.generate(model, encoded, prompt, **kwargs)
    sequences = out.sequences  # (B * n, S + T): S tokens before the caption
    start, ends = kind.caption_start(prompt.shape[1]), kind.end_ids(model, captioner.tokenizer)
    if stepwise:
        scores = scoring.mean_logprob_of_steps(out.logits, sequences[:, start:], ends)
    else:
        logits = kind.logits(model, family.repeat(encoded, num_candidates), sequences, prompt.shape[1])
        scores = scoring.mean_logprob(logits, sequences, start, ends)
    texts = captioner.tokenizer.batch_decode(sequences[:, start:], skip_special_tokens=True)
    return [Caption(text.strip(), score) for text, score in zip(texts, scores)]
