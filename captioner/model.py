"""Loading captioners from a hub id, a local folder or an object-store folder. No Ray here.

Weights load from safetensors only and ``trust_remote_code`` stays off: a checkpoint can never run
code of its own on our workers.
"""

import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass

import torch
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerBase, VisionEncoderDecoderModel
from transformers.utils import logging as hf_logging

from . import storage
from .config import ModelConfig

log = logging.getLogger(__name__)

# Multilingual decoders carry one special token per language, e.g. "<|fr|>", forced after the start token.
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)\|>$")
# A checkpoint without language tokens writes this language.
DEFAULT_LANGUAGE = "en"


class ModelError(ValueError):
    """The model cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class ImageSpec:
    """What the decode stage and the device need to know of the model's image processor."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float  # multiplies uint8 pixels before normalising (1/255 for ViT)


@dataclass(frozen=True)
class ModelInfo:
    """Everything the driver needs before any worker loads weights."""

    image: ImageSpec
    languages: dict[str, int | None]  # language code -> its token id (None: the model's only language)


@dataclass
class Captioner:
    """A loaded vision-encoder-decoder with the pieces generation needs."""

    model: VisionEncoderDecoderModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    name: str
    revision: str | None


def local_path(config: ModelConfig, options: dict | None = None) -> str:
    """A path ``from_pretrained`` can open: local folders as they are, object-store folders copied once per node.

    Anything else is a hub id and is passed through (``from_pretrained`` uses the HF cache).
    """
    if os.path.isdir(config.name):
        return config.name
    if "://" not in config.name:
        return config.name
    key = hashlib.sha256(f"{config.name}@{config.revision}".encode()).hexdigest()[:16]
    target = os.path.join(config.cache_dir, key)
    if not os.path.isdir(target):
        fs, path = storage.filesystem(config.name, options)
        if not fs.exists(path):
            raise ModelError(f"model folder {config.name!r} does not exist or cannot be read")
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        log.info("copying model %s to %s", config.name, target)
        fs.get(path.rstrip("/") + "/", tmp + "/", recursive=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another worker on this node finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hub_kwargs(config: ModelConfig) -> dict:
    return {"revision": config.revision} if config.revision else {}


def describe(config: ModelConfig, options: dict | None = None) -> ModelInfo:
    """Read the model's image processor and tokenizer (no weights) to plan a run."""
    return _read_parts(config, options)[0]


def _read_parts(config: ModelConfig, options: dict | None) -> tuple[ModelInfo, PreTrainedTokenizerBase]:
    path = local_path(config, options)
    try:
        processor = AutoImageProcessor.from_pretrained(path, **_hub_kwargs(config))
        tokenizer = AutoTokenizer.from_pretrained(path, **_hub_kwargs(config))
    except OSError as exc:
        raise ModelError(
            f"cannot load model {config.name!r}: {exc}. Pass a local folder, an s3:// folder, "
            "or a hub id that is reachable (or already in the Hugging Face cache)"
        ) from exc
    return ModelInfo(image=_image_spec(processor), languages=_languages(tokenizer)), tokenizer


def _image_spec(processor) -> ImageSpec:
    size = processor.size
    if isinstance(size, int):
        height = width = size
    elif "height" in size:
        height, width = size["height"], size["width"]
    else:
        height = width = size["shortest_edge"]
    normalize = getattr(processor, "do_normalize", True)
    mean = tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0)
    rescale = processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0
    return ImageSpec(height=int(height), width=int(width), mean=mean, std=std, rescale=float(rescale))


def _languages(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    found = {}
    for token in tokenizer.all_special_tokens:
        match = _LANG_TOKEN.match(token)
        if match:
            found[match.group(1)] = tokenizer.convert_tokens_to_ids(token)
    return found or {DEFAULT_LANGUAGE: None}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Captioner:
    """Load weights once (fp16 on CUDA, fp32 on CPU), in eval mode."""
    hf_logging.disable_progress_bar()  # per-weight bars from every actor would drown the job's own progress
    device = device or default_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    info, tokenizer = _read_parts(config, options)
    try:
        model = VisionEncoderDecoderModel.from_pretrained(
            local_path(config, options), use_safetensors=True, dtype=dtype, **_hub_kwargs(config)
        )
    except OSError as exc:
        raise ModelError(
            f"cannot load weights of {config.name!r}: {exc}. captioner loads safetensors weights only"
        ) from exc
    model.to(device).eval()
    return Captioner(model, tokenizer, info, device, dtype, config.name, config.revision)
