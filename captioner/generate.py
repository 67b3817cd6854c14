"""Batched captioning, translation and image-text scoring for loaded models. No Ray here.

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
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from .config import GenerationConfig
from .model import Captioner, ImageSpec, Loaded, Scorer
from .schema import NATIVE

TRANSLATION_LENGTH = 2  # a translation may run to this many times the caption's token budget


@dataclass(frozen=True)
class Caption:
    text: str
    score: float
    producer: str = NATIVE  # "native" or the translation model that wrote it
    source_lang: str | None = None  # for translations, the language translated from
    clip_score: float | None = None
    candidates: int = 1  # how many captions this one was chosen from


@dataclass
class Models:
    """What one caption actor holds."""

    captioner: Captioner
    translators: dict[str, Loaded] = field(default_factory=dict)  # target language -> translation model
    scorer: Scorer | None = None
    source_language: str = "en"


def pixel_values(pixels: np.ndarray, spec: ImageSpec, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised (B, 3, H, W) on the device: normalising there keeps transfers small."""
    x = torch.from_numpy(np.require(pixels, requirements=["C", "W"])).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(dtype) * spec.rescale  # (B, 3, H, W)
    mean = torch.tensor(spec.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=dtype).view(1, 3, 1, 1)
    return (x - mean) / std


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
    seed: int | None = None,
) -> list[dict[str, Caption]]:
    """Every caption the batch asks for: native languages first, then translations of the source caption,
    then CLIP scores. ``source_captions[i]`` is image i's stored source caption when this run does not write it.
    """
    native = [[lang for lang in langs if lang not in models.translators] for langs in requests]
    results = caption(models.captioner, pixels, native, generation, seed=seed, num_candidates=num_candidates,
                      scorer=models.scorer, clip_pixels=clip_pixels)
    for lang, translator in models.translators.items():
        rows = [i for i, langs in enumerate(requests) if lang in langs]
        sources = [_source(results[i], source_captions, i, models.source_language) for i in rows]
        for i, text in zip(rows, translate(translator, sources, lang, generation)):
            results[i][lang] = replace(text, source_lang=models.source_language)
    if models.scorer is not None:
        _add_clip_scores(models.scorer, clip_pixels, results)
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
    seed: int | None = None,
    num_candidates: int = 1,
    scorer: Scorer | None = None,
    clip_pixels: np.ndarray | None = None,
) -> list[dict[str, Caption]]:
    """Caption each image in each language it asks for; the encoder runs once per image.

    With ``num_candidates`` > 1, that many captions are generated per image and language (beam search,
    or sampling when sampling is on) and the one with the best CLIP score under ``scorer`` is kept.
    """
    results: list[dict[str, Caption]] = [{} for _ in requests]
    rows_by_lang = {lang: [i for i, langs in enumerate(requests) if lang in langs]
                    for lang in dict.fromkeys(lang for langs in requests for lang in langs)}
    if not rows_by_lang:
        return results
    spec = captioner.info.image
    x = pixel_values(pixels, spec, captioner.device, captioner.dtype)
    encoded = captioner.model.encoder(pixel_values=x).last_hidden_state  # (B, P, D)
    for lang, rows in rows_by_lang.items():
        if seed is not None:
            torch.manual_seed(seed)
        index = torch.tensor(rows, device=encoded.device)
        texts = _generate(captioner, encoded.index_select(0, index), lang, generation, num_candidates)  # (len(rows) * n)
        if num_candidates > 1:
            texts = _best_of(scorer, clip_pixels[rows], texts, num_candidates)
        for i, text in zip(rows, texts):
            results[i][lang] = text
    return results


def _prompt(captioner: Captioner, lang: str, batch: int) -> torch.Tensor:
    """Decoder start token, then the language token for multilingual decoders: (B, 1 or 2)."""
    start = captioner.model.config.decoder_start_token_id
    if start is None:
        start = captioner.model.generation_config.decoder_start_token_id
    ids = [start]
    lang_token = captioner.info.languages[lang]
    if lang_token is not None:
        ids.append(lang_token)
    return torch.tensor([ids] * batch, device=captioner.device)


def _search(generation: GenerationConfig, num_candidates: int) -> dict:
    """generate() settings: greedy, beam or sampling, returning ``num_candidates`` sequences per input."""
    settings = {"max_new_tokens": generation.max_new_tokens, "num_return_sequences": num_candidates}
    if generation.do_sample:
        # top_k=0: nucleus sampling as documented, without transformers' default top-50 cut
        settings.update(do_sample=True, temperature=generation.temperature or 1.0, top_p=generation.top_p or 1.0,
                        top_k=0, num_beams=generation.num_beams)
    else:
        settings["num_beams"] = max(generation.num_beams, num_candidates)
    return settings


def _generate(captioner: Captioner, encoded: torch.Tensor, lang: str, generation: GenerationConfig,
              num_candidates: int = 1) -> list[Caption]:
    prompt = _prompt(captioner, lang, encoded.shape[0])
    search = _search(generation, num_candidates)
    stepwise = search["num_beams"] == 1  # each step's logits belong to the sequence it extends
    out = captioner.model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
        decoder_input_ids=prompt,
        return_dict_in_generate=True,
        output_logits=stepwise,
        **search,
    )
    sequences = out.sequences  # (B * n, prompt + T)
    if stepwise:
        scores = _mean_logprob_of_steps(captioner, out.logits, sequences[:, prompt.shape[1]:])
    else:
        encoded = encoded.repeat_interleave(num_candidates, dim=0)
        scores = _mean_logprob(captioner, sequences, prompt.shape[1],
                               encoder_outputs=BaseModelOutput(last_hidden_state=encoded))
    texts = captioner.tokenizer.batch_decode(sequences[:, prompt.shape[1]:], skip_special_tokens=True)
    return [Caption(text.strip(), score) for text, score in zip(texts, scores)]


def _best_of(scorer: Scorer, clip_pixels: np.ndarray, candidates: list[Caption], n: int) -> list[Caption]:
    """Keep, per image, the candidate the CLIP model finds closest to the image."""
    clip = clip_scores(scorer, np.repeat(clip_pixels, n, axis=0), [c.text for c in candidates])
    best = []
    for start in range(0, len(candidates), n):
        pick = start + int(np.argmax(clip[start:start + n]))
        best.append(replace(candidates[pick], clip_score=clip[pick], candidates=n))
    return best


@torch.inference_mode()
def translate(translator: Loaded, texts: Sequence[str], lang: str, generation: GenerationConfig) -> list[Caption]:
    """Translate a batch with the model's own search settings (never sampled), scored like captions."""
    if not texts:
        return []
    prefix = f">>{lang}<<"  # multi-target Marian models pick the language with a prefix token
    if prefix in translator.tokenizer.get_vocab():
        texts = [f"{prefix} {text}" for text in texts]
    inputs = translator.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                                  max_length=translator.model.config.max_position_embeddings).to(translator.device)
    encoded = translator.model.get_encoder()(**inputs).last_hidden_state  # (B, S, D)
    sequences = translator.model.generate(
        # generate() expands what it is given in place for beam search: hand it its own wrapper
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded), attention_mask=inputs.attention_mask,
        max_new_tokens=TRANSLATION_LENGTH * generation.max_new_tokens,
    )  # (B, 1 + T): decoder start, then the translation; beam size from the model's own generation config
    scores = _mean_logprob(translator, sequences, 1, encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                           attention_mask=inputs.attention_mask)
    out = translator.tokenizer.batch_decode(sequences[:, 1:], skip_special_tokens=True)
    return [Caption(text.strip(), score, producer=translator.name) for text, score in zip(out, scores)]


def _mean_logprob(loaded: Loaded, sequences: torch.Tensor, prompt_len: int, **inputs) -> list[float]:
    """Mean log-probability of the generated tokens, up to and including the first end-of-text."""
    # Attention is causal, so padding after a sequence's end never reaches the positions that are scored.
    decoder_input_ids = sequences[:, :-1]
    logits = loaded.model(**inputs, decoder_input_ids=decoder_input_ids,
                          decoder_attention_mask=torch.ones_like(decoder_input_ids)).logits  # (B, L-1, V)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_lp = logprobs.gather(-1, sequences[:, 1:, None]).squeeze(-1)[:, prompt_len - 1:]  # (B, T)
    return _mean_until_end(loaded, token_lp, sequences[:, prompt_len:])


def _mean_logprob_of_steps(loaded: Loaded, step_logits: Sequence[torch.Tensor], generated: torch.Tensor) -> list[float]:
    """The same mean from the raw logits ``generate`` kept, one (B, V) tensor per generated token."""
    token_lp = torch.stack([
        logits.float().gather(-1, generated[:, t, None]).squeeze(-1) - torch.logsumexp(logits.float(), dim=-1)
        for t, logits in enumerate(step_logits)
    ], dim=1)  # (B, T)
    return _mean_until_end(loaded, token_lp, generated)


def _mean_until_end(loaded: Loaded, token_lp: torch.Tensor, generated: torch.Tensor) -> list[float]:
    """Mean of (B, T) token log-probabilities up to and including each row's first end-of-text."""
    eos = torch.tensor(_eos_ids(loaded), device=generated.device)
    is_end = torch.isin(generated, eos).long()
    after_end = (is_end.cumsum(dim=1) - is_end) > 0  # tokens past the first end-of-text are padding
    mask = (~after_end).float()
    return ((token_lp * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()


def _eos_ids(loaded: Loaded) -> list[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


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


def _add_clip_scores(scorer: Scorer, clip_pixels: np.ndarray, results: list[dict[str, Caption]]) -> None:
    pending = [(i, lang) for i, found in enumerate(results) for lang, c in found.items() if c.clip_score is None]
    if not pending:
        return
    rows = [i for i, _ in pending]
    scores = clip_scores(scorer, clip_pixels[rows], [results[i][lang].text for i, lang in pending])
    for (i, lang), score in zip(pending, scores):
        results[i][lang] = replace(results[i][lang], clip_score=score)
