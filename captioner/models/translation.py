"""Translation of captions into the languages a captioner does not write natively. No Ray here.

Marian models translate one pair (or pick the target by a ``>>fr<<`` prefix); mBART-50 many-to-many and M2M100
take the source language on the tokenizer and force the target's code as the first token. NLLB names its
languages by FLORES-200 codes (``fra_Latn``) that ISO codes do not map to, so it is refused by name, as is any
other multilingual tokenizer whose way of choosing a language we do not know: it would write the wrong language.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from ..config import GenerationConfig, ModelConfig
from . import scoring
from .family import end_ids
from .loading import Loaded, ModelError, load_tokenizer
from .scoring import Caption

TRANSLATION_LENGTH = 2  # a translation may run to this many times the caption's token budget


@dataclass(frozen=True)
class Direction:
    """How to make a translator write ``target`` from ``source``."""

    prefix: str | None = None  # prepended to each text (multi-target Marian)
    source_code: str | None = None  # the tokenizer's src_lang (mBART-50, M2M100)
    forced: int | None = None  # token id forced first in the output (the target's language code)


def direction(tokenizer: PreTrainedTokenizerBase, source: str, target: str) -> Direction:
    """The way this translator's tokenizer chooses languages; ValueError, naming the model kind, if it cannot."""
    if "Nllb" in type(tokenizer).__name__:
        raise ValueError("NLLB translators name languages by FLORES-200 codes (fra_Latn), which captioner does not "
                         "map ISO codes to; use an mBART-50 many-to-many, M2M100 or Marian (opus-mt) model")
    codes = getattr(tokenizer, "lang_code_to_id", None)
    if codes:  # mBART-50 (fr_XX) and M2M100 (fr)
        by_iso = {code.split("_")[0]: code for code in codes}
        missing = [lang for lang in (source, target) if lang not in by_iso]
        if missing:
            raise ValueError(f"its {type(tokenizer).__name__} has no language code for {', '.join(missing)}; it "
                             f"knows {', '.join(sorted(by_iso))}")
        return Direction(source_code=by_iso[source], forced=codes[by_iso[target]])
    if hasattr(tokenizer, "src_lang"):
        raise ValueError(f"its {type(tokenizer).__name__} chooses languages in a way captioner does not know")
    prefix = f">>{target}<<"
    return Direction(prefix=prefix if prefix in tokenizer.get_vocab() else None)


def check(config: ModelConfig, options: dict | None, source: str, target: str) -> None:
    """Refuse, before any work, a translator that cannot write ``target`` from ``source``."""
    try:
        direction(load_tokenizer(config, options), source, target)
    except ValueError as exc:
        raise ModelError(f"--translate {target}={config.name}: {exc}") from None


@torch.inference_mode()
def translate(translator: Loaded, texts: Sequence[str], source: str, target: str,
              generation: GenerationConfig) -> list[Caption]:
    """Translate a batch with the model's own search settings (never sampled), scored like captions."""
    if not texts:
        return []
    way = direction(translator.tokenizer, source, target)
    if way.prefix:
        texts = [f"{way.prefix} {text}" for text in texts]
    if way.source_code:
        translator.tokenizer.src_lang = way.source_code
    inputs = translator.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                                  max_length=translator.model.config.max_position_embeddings).to(translator.device)
    encoded = translator.model.get_encoder()(**inputs).last_hidden_state  # (B, S, D)
    forced = {"forced_bos_token_id": way.forced} if way.forced is not None else {}
    sequences = translator.model.generate(
        # generate() expands what it is given in place for beam search: hand it its own wrapper
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded), attention_mask=inputs.attention_mask,
        max_new_tokens=TRANSLATION_LENGTH * generation.max_new_tokens, **forced,
    )  # (B, 1 + T): decoder start, then the translation; beam size from the model's own generation config
    decoder_inputs = sequences[:, :-1]
    logits = translator.model(encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                              attention_mask=inputs.attention_mask, decoder_input_ids=decoder_inputs,
                              decoder_attention_mask=torch.ones_like(decoder_inputs)).logits  # (B, L-1, V)
    prompt = 2 if way.forced is not None else 1  # the decoder start, and a forced language code: not the model's
    scores = scoring.mean_logprob(logits, sequences, prompt, end_ids(translator.model, translator.tokenizer))
    out = translator.tokenizer.batch_decode(sequences[:, prompt:], skip_special_tokens=True)
    return [Caption(text.strip(), score, producer=translator.name) for text, score in zip(out, scores)]
