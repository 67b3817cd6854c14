"""Batched caption generation and scoring for a loaded captioner. No Ray here.

``score`` is the mean log-probability per generated token (the end-of-text token included, the
language prompt excluded) under the model that wrote the caption: length-normalised, so short and
long captions compare, and the same for greedy, beam and sampled text because it is computed by one
teacher-forced pass over the final tokens rather than taken from the search's internal scores.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from .config import GenerationConfig
from .model import Captioner


@dataclass(frozen=True)
class Caption:
    text: str
    score: float


def pixel_values(captioner: Captioner, pixels: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised (B, 3, H, W) on the device: normalising there keeps transfers small."""
    spec = captioner.info.image
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(captioner.device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).to(captioner.dtype) * spec.rescale  # (B, 3, H, W)
    mean = torch.tensor(spec.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def caption(
    captioner: Captioner,
    pixels: np.ndarray,
    requests: Sequence[Sequence[str]],
    generation: GenerationConfig,
    seed: int | None = None,
) -> list[dict[str, Caption]]:
    """Caption each image in each language it asks for; the encoder runs once per image.

    ``requests[i]`` lists the languages wanted for image ``i``; the result maps them to captions.
    """
    results: list[dict[str, Caption]] = [{} for _ in requests]
    if len(requests) == 0:
        return results
    encoded = captioner.model.encoder(pixel_values=pixel_values(captioner, pixels)).last_hidden_state  # (B, P, D)
    languages = dict.fromkeys(lang for langs in requests for lang in langs)
    for lang in languages:
        rows = [i for i, langs in enumerate(requests) if lang in langs]
        index = torch.tensor(rows, device=encoded.device)
        if seed is not None:
            torch.manual_seed(seed)
        texts = _generate(captioner, encoded.index_select(0, index), lang, generation)
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


def _generate(captioner: Captioner, encoded: torch.Tensor, lang: str, generation: GenerationConfig) -> list[Caption]:
    model = captioner.model
    prompt = _prompt(captioner, lang, encoded.shape[0])
    sampling = {}
    if generation.do_sample:
        sampling = {"do_sample": True, "temperature": generation.temperature or 1.0, "top_p": generation.top_p or 1.0}
    sequences = model.generate(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
        decoder_input_ids=prompt,
        max_new_tokens=generation.max_new_tokens,
        num_beams=generation.num_beams,
        **sampling,
    )  # (B, prompt + T)
    scores = _mean_logprob(captioner, encoded, sequences, prompt.shape[1])
    new_tokens = sequences[:, prompt.shape[1] :]
    texts = captioner.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [Caption(text.strip(), float(score)) for text, score in zip(texts, scores)]


def _mean_logprob(captioner: Captioner, encoded: torch.Tensor, sequences: torch.Tensor, prompt_len: int) -> list[float]:
    """Mean log-probability of the generated tokens, up to and including the first end-of-text."""
    logits = captioner.model(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded), decoder_input_ids=sequences[:, :-1]
    ).logits  # (B, L-1, V)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_lp = logprobs.gather(-1, sequences[:, 1:, None]).squeeze(-1)[:, prompt_len - 1 :]  # (B, T)
    generated = sequences[:, prompt_len:]  # (B, T)
    eos = torch.tensor(_eos_ids(captioner), device=generated.device)
    is_end = torch.isin(generated, eos).long()
    after_end = (is_end.cumsum(dim=1) - is_end) > 0  # tokens past the first end-of-text are padding
    mask = (~after_end).float()
    return ((token_lp * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).tolist()


def _eos_ids(captioner: Captioner) -> list[int]:
    eos = captioner.model.generation_config.eos_token_id
    if eos is None:
        eos = captioner.tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]
