"""Which captioner, and how it writes: model and generation settings."""

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

DEMO_MODEL = str(Path(__file__).parent.parent / "demo_model")
DTYPES = ("auto", "bf16", "fp16", "fp32")
LANGUAGE_PROMPTS = ("auto", "start", "after-start")  # where an mBART-50 language code goes in the decoder prompt
CAPTION_STYLES = ("short", "detailed", "paragraph")  # Florence-2's three caption tasks; chat models' instructions
# --max-new-tokens by caption style when it is not given: a paragraph needs more room than a sentence
MAX_NEW_TOKENS = {"short": 32, "detailed": 128, "paragraph": 320}
FAST_GENERATION = ("auto", "on", "off")  # static KV cache, CUDA graphs and fixed batch shapes for greedy captions


@dataclass(frozen=True)
class ModelConfig:
    name: str = DEMO_MODEL  # hub id, local folder, or object-store folder (s3://...)
    revision: str | None = None  # hub revision: branch, tag or commit
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "captioner", "models")  # per-node copies
    safetensors_only: bool = False  # refuse pickle weights even through torch's weights-only unpickler
    dtype: str = "auto"  # auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), bf16, fp16 or fp32
    language_prompt: str = "auto"  # mBART-50 codes: the decoder start (start) or after it (after-start)
    caption_style: str = "short"  # short, detailed or paragraph: a task (Florence-2) or an instruction (chat models)
    prompt: str | None = None  # chat models: the instruction, "{language}" becoming e.g. "French"; None: the style's
    image_size: tuple[int, int] | None = None  # (width, height) every image is resized to, for models of any size

    def validate(self) -> None:
        if self.caption_style not in CAPTION_STYLES:
            raise ConfigError(f"--caption-style must be one of {', '.join(CAPTION_STYLES)}, got {self.caption_style!r}")
        if self.prompt is not None and not self.prompt.strip():
            raise ConfigError("--prompt is empty; leave it out for the caption style's own instruction")
        if self.image_size is not None and min(self.image_size) < 1:
            raise ConfigError(f"--image-size must be WIDTHxHEIGHT in pixels, got {self.image_size}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.language_prompt not in LANGUAGE_PROMPTS:
            raise ConfigError(f"--language-prompt must be one of {', '.join(LANGUAGE_PROMPTS)}, "
                              f"got {self.language_prompt!r}")

    def helper(self, name: str) -> "ModelConfig":
        """A translation or CLIP model loaded under this one's cache and weight rules."""
        return ModelConfig(name=name, cache_dir=self.cache_dir, safetensors_only=self.safetensors_only,
                           dtype=self.dtype)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 32  # caption length cap, in tokens
    num_beams: int = 1  # 1 = greedy (or sampling); >1 = beam search
    temperature: float | None = None  # set with top_p to sample instead of searching
    top_p: float | None = None  # nucleus sampling mass
    seed: int = 0  # makes sampling reproducible
    fast: str = "auto"  # greedy on a static cache, compiled on CUDA: auto (on CUDA), on, off; same tokens either way

    @property
    def do_sample(self) -> bool:
        return self.temperature is not None or self.top_p is not None

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ConfigError(f"--num-beams must be at least 1, got {self.num_beams}")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}; leave it out for greedy decoding")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.fast not in FAST_GENERATION:
            raise ConfigError(f"--fast-generation must be one of {', '.join(FAST_GENERATION)}, got {self.fast!r}")
