"""The family interface: what differs between kinds of captioning checkpoints, one small class each.

A family names the transformers class its checkpoints load into (never another), the languages a checkpoint
writes natively with the token ids each one's generation starts from, and how pixels go in: ``encode`` once
per image, ``generate`` from a prompt, and ``logits`` of a finished sequence (beam search is scored by that
teacher-forced pass). Search settings, scores, best-of-N, translation and CLIP are shared (``generate.py``,
``scoring.py``), so adding a family is one module and one fixture. No Ray here.
"""

import re
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from transformers import Cache, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

# Multilingual decoders carry one special token per language, e.g. "<|fr|>", forced after the start token.
LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)\|>$")
# A checkpoint that names no languages writes this one.
DEFAULT_LANGUAGE = "en"


class Family(ABC):
    """One kind of captioning checkpoint: subclasses set the class attributes and write the four methods."""

    name: ClassVar[str]  # as messages and the README say it
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this family loads
    loader: ClassVar[type[PreTrainedModel]]  # the class its weights load into
    example: ClassVar[str]  # a hub checkpoint of this family

    @abstractmethod
    def prompts(self, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase,
                language_prompt: str) -> dict[str, tuple[int, ...]]:
        """Each language the checkpoint writes natively -> the token ids its captions start from."""

    def frames(self, config: PretrainedConfig) -> int:
        """Frames per caption: 1 for image models; a video model's frame count (``encode`` then takes
        (B, F, 3, H, W))."""
        return 1

    @abstractmethod
    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        """What generation conditions on, computed once per image: (B, ...) from normalised (B, 3, H, W)."""

    @abstractmethod
    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        """``generate`` from (B, P) prompt ids; returns its dict output (sequences start with the prompt)."""

    @abstractmethod
    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """(B, L-1, V) logits of each next token of (B, L) ``sequences``, teacher-forced."""

    def end_ids(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids that end a caption."""
        return end_ids(model, tokenizer)

    def static_cache(self, model: PreTrainedModel, length: int, encoded: torch.Tensor) -> Cache | None:
        """A static KV cache for sequences of up to ``length`` tokens conditioned on ``encoded``, which ``generate``
        takes as ``cache=`` (the fast path, ``fast.py``); None where this family's generation cannot run on one
        under ``torch.compile``, and its captions take the plain path."""
        return None


def end_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The end-of-text ids of a model's generation config, else its tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


def token_languages(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Our ``<|xx|>`` language tokens: language code -> token id."""
    found = {}
    for token in tokenizer.all_special_tokens:
        match = LANG_TOKEN.match(token)
        if match:
            found[match.group(1)] = tokenizer.convert_tokens_to_ids(token)
    return found


def code_languages(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """mBART-50 style language codes (``fr_XX``, ``de_DE``) by ISO code: ``{"fr": id of fr_XX, ...}``."""
    codes = getattr(tokenizer, "lang_code_to_id", None) or {}
    return {code.split("_")[0]: token_id for code, token_id in codes.items() if "_" in code}
