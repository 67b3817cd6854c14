"""The family interface: what differs between kinds of captioning checkpoints, one small class each.

A family names the transformers class its checkpoints load into (never another), the languages a checkpoint
writes natively with the token ids each one's generation starts from (for the run's caption style and prompt),
what its processor does to an image, and how pixels go in: ``encode`` once per image, ``generate`` from a
prompt, and ``logits`` of a finished sequence (beam search is scored by that teacher-forced pass). Search
settings, scores, best-of-N, translation and CLIP are shared (``generate.py``, ``scoring.py``), so adding a
family is one module and one fixture. No Ray here.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from transformers import AutoProcessor, Cache, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..config import ModelConfig
from ..media.image import ImageSpec
from .preprocess import image_spec

# Multilingual decoders carry one special token per language, e.g. "<|fr|>", forced after the start token.
LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)\|>$")
# A checkpoint that names no languages writes this one.
DEFAULT_LANGUAGE = "en"


# What ``encode`` gives: one tensor, or a tuple of them, each with the batch first (B, ...).
Encoded = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Checkpoint:
    """What planning reads of a checkpoint before any weights: its config, tokenizer and image processor, the
    run's model settings, and its whole processor (chat template, image tokens) loaded only by families that
    need it."""

    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    image_processor: object
    settings: ModelConfig
    processor: Callable[[], object]


class Family(ABC):
    """One kind of captioning checkpoint: subclasses set the class attributes and write the four methods."""

    name: ClassVar[str]  # as messages and the README say it
    model_types: ClassVar[tuple[str, ...]]  # config.model_type values this family loads
    loader: ClassVar[type[PreTrainedModel]]  # the class its weights load into
    example: ClassVar[str]  # a hub checkpoint of this family
    styles: ClassVar[tuple[str, ...]] = ("short",)  # the caption styles it can write (--caption-style)
    takes_prompt: ClassVar[bool] = False  # whether --prompt instructs it (chat models)
    takes_image_size: ClassVar[bool] = False  # whether --image-size sets its input size (any-size vision towers)
    processor_loader: ClassVar[type] = AutoProcessor  # the class its whole processor loads into (chat prompts)

    @abstractmethod
    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        """Each language the checkpoint writes natively -> the token ids its captions start from, for the run's
        caption style and prompt and images of ``image``'s size."""

    def image(self, checkpoint: Checkpoint) -> ImageSpec:
        """What the checkpoint's processor does to an image, as the decode stage can do it once on the CPU."""
        return replace(image_spec(checkpoint.image_processor), frames=self.frames(checkpoint.config))

    def frames(self, config: PretrainedConfig) -> int:
        """Frames per caption: 1 for image models; a video model's frame count (``encode`` then takes
        (B, F, 3, H, W))."""
        return 1

    @abstractmethod
    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> Encoded:
        """What generation conditions on, computed once per image: (B, ...) from normalised (B, 3, H, W)."""

    @abstractmethod
    def generate(self, model: PreTrainedModel, encoded: Encoded, prompt: torch.Tensor, **search):
        """``generate`` from (B, P) prompt ids; returns its dict output, whose sequences hold ``caption_start``
        tokens before the caption."""

    @abstractmethod
    def logits(self, model: PreTrainedModel, encoded: Encoded, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        """(B, L-1, V) logits of each next token of (B, L) ``sequences``, teacher-forced; their first
        ``prompt_length`` tokens are the prompt ``generate`` was given (a decoder that attends to its prompt both
        ways, as PaliGemma's, must know where it ends; a causal one need not)."""

    def caption_start(self, prompt_length: int) -> int:
        """How many tokens of ``generate``'s sequences come before the caption: the prompt, where the decoder
        continues it; an encoder-decoder that reads its prompt in the encoder says its decoder start's length."""
        return prompt_length

    def end_ids(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids that end a caption."""
        return end_ids(model, tokenizer)

    def static_cache(self, model: PreTrainedModel, length: int, encoded: Encoded) -> Cache | None:
        """A static KV cache for sequences of up to ``length`` tokens conditioned on ``encoded``, which ``generate``
        takes as ``cache=`` (the fast path, ``fast.py``); None where this family's generation cannot run on one
        under ``torch.compile``, and its captions take the plain path."""
        return None


def rows(encoded: Encoded, index: torch.Tensor) -> Encoded:
    """The rows ``index`` of each tensor of ``encoded``."""
    if isinstance(encoded, torch.Tensor):
        return encoded.index_select(0, index)
    return tuple(t.index_select(0, index) for t in encoded)


def repeat(encoded: Encoded, times: int) -> Encoded:
    """Each row of each tensor of ``encoded`` ``times`` times in a row."""
    if isinstance(encoded, torch.Tensor):
        return encoded.repeat_interleave(times, dim=0)
    return tuple(t.repeat_interleave(times, dim=0) for t in encoded)


def batch_size(encoded: Encoded) -> int:
    return (encoded if isinstance(encoded, torch.Tensor) else encoded[0]).shape[0]


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
