"""Every family captioner knows, picked from a checkpoint's ``model_type``, as transformers' Auto classes do."""

from transformers import PretrainedConfig

from .blip import Blip
from .family import Family
from .florence2 import Florence2
from .git import Git
from .paligemma import PaliGemma
from .qwen_vl import Qwen2_5VL, Qwen2VL, Qwen3VL
from .smolvlm import Idefics3, SmolVLM
from .vision_encoder_decoder import VisionEncoderDecoder

FAMILIES: tuple[Family, ...] = (VisionEncoderDecoder(), Git(), Blip(), Florence2(), PaliGemma(), Qwen2_5VL(), Qwen2VL(),
                                Qwen3VL(), Idefics3(), SmolVLM())


def family_of(config: PretrainedConfig) -> Family | None:
    """The family that loads this checkpoint, or None when none does."""
    return next((f for f in FAMILIES if config.model_type in f.model_types), None)


def supported() -> str:
    """The families, for messages: "vision encoder-decoder (e.g. nlpconnect/...), GIT (...), BLIP (...)"."""
    return ", ".join(f"{f.name} (e.g. {f.example})" for f in FAMILIES)
