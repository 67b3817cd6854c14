"""Loading captioners, translators and image-text scorers from a hub id, a local folder or an
object-store folder. No Ray here.

Weights load from safetensors only (pickle weights only with ``allow_pickle_weights``) and
``trust_remote_code`` stays off: a checkpoint can never run code of its own on our workers. Object-store
folders are copied file by file to paths checked to stay inside the copy, whatever their keys hold.
"""

import hashlib
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    CLIPModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    VisionEncoderDecoderModel,
)
from transformers.utils import logging as hf_logging

from ..config import ModelConfig, UserError
from ..store import fs as storage
from .preprocess import ImageSpec, image_spec

log = logging.getLogger(__name__)

# Multilingual decoders carry one special token per language, e.g. "<|fr|>", forced after the start token.
_LANG_TOKEN = re.compile(r"^<\|([a-z]{2,3}(?:[_-][A-Za-z]{2,4})?)\|>$")
# A checkpoint without language tokens writes this language.
DEFAULT_LANGUAGE = "en"


class ModelError(UserError, ValueError):
    """The model cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """Everything the driver needs of a captioner before any worker loads weights."""

    image: ImageSpec
    languages: dict[str, int | None]  # language code -> its token id (None: the model's only language)


@dataclass
class Loaded:
    """A model in eval mode on its device, with its tokenizer."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    name: str
    revision: str | None


@dataclass
class Captioner(Loaded):
    info: ModelInfo | None = None


@dataclass
class Scorer(Loaded):
    image: ImageSpec | None = None


def local_path(config: ModelConfig, options: dict | None = None) -> str:
    """A path ``from_pretrained`` can open: local folders as they are, object-store folders copied once per node.

    Anything else is a hub id and is passed through (``from_pretrained`` uses the HF cache).
    """
    if os.path.isdir(config.name) or "://" not in config.name:
        return config.name
    key = hashlib.sha256(f"{config.name}@{config.revision}".encode()).hexdigest()[:16]
    target = os.path.join(config.cache_dir, key)
    if not os.path.isdir(target):
        fs, path = storage.filesystem(config.name, options)
        if not fs.exists(path):
            raise ModelError(f"model folder {config.name!r} does not exist or cannot be read")
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        log.info("copying model %s to %s", config.name, target)
        try:
            _copy_folder(fs, path.rstrip("/"), tmp, config.name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, target)
        except OSError:  # another worker on this node finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_folder(fs, root: str, target: str, name: str) -> None:
    """Every object under ``root`` into ``target``, refusing keys that would land elsewhere (``..``, ``/x``)."""
    base = os.path.realpath(target)
    for remote in sorted(fs.find(root)):
        relative = remote[len(root) + 1:]
        parts = relative.split("/")
        local = os.path.realpath(os.path.join(base, *parts))
        if any(p in ("", ".", "..") for p in parts) or "\\" in relative or not local.startswith(base + os.sep):
            raise ModelError(f"model folder {name!r} holds an object named {relative!r}, which would be written "
                             "outside the local copy; refusing the whole folder")
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fs.get_file(remote, local)


def _pickle_only(path: str) -> list[str]:
    """Pickle weight files of a local checkpoint folder that has no safetensors weights; empty otherwise."""
    if not os.path.isdir(path):
        return []
    names = os.listdir(path)
    if any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return []
    return sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")) or n.endswith(".bin.index.json"))


def _hub_kwargs(config: ModelConfig) -> dict:
    return {"revision": config.revision} if config.revision else {}


def _pretrained(loader, config: ModelConfig, options: dict | None, what: str, **kwargs):
    """``loader.from_pretrained`` with an error message that says what to pass instead."""
    try:
        return loader.from_pretrained(local_path(config, options), **_hub_kwargs(config), trust_remote_code=False,
                                      **kwargs)
    except OSError as exc:
        raise ModelError(
            f"cannot load the {what} of {config.name!r}: {exc}. Pass a local folder, an s3:// folder, or a hub "
            "id that is reachable (or already in the Hugging Face cache); weights must be safetensors (or pass "
            "--allow-pickle-weights for a checkpoint you trust)"
        ) from exc
    except ValueError as exc:
        if "trust_remote_code" not in str(exc) and "custom code" not in str(exc):
            raise
        raise ModelError(f"the {what} of {config.name!r} needs code shipped with the checkpoint; captioner never "
                         "runs checkpoint code. Use a checkpoint built from transformers' own classes") from exc


def describe(config: ModelConfig, options: dict | None = None) -> ModelInfo:
    """Read a captioner's image processor and tokenizer (no weights) to plan a run."""
    tokenizer = _pretrained(AutoTokenizer, config, options, "tokenizer")
    processor = _pretrained(AutoImageProcessor, config, options, "image processor")
    return ModelInfo(image=image_spec(processor), languages=_languages(tokenizer))


def describe_scorer(config: ModelConfig, options: dict | None = None) -> ImageSpec:
    return image_spec(_pretrained(AutoImageProcessor, config, options, "image processor"))


def _languages(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    found = {}
    for token in tokenizer.all_special_tokens:
        match = _LANG_TOKEN.match(token)
        if match:
            found[match.group(1)] = tokenizer.convert_tokens_to_ids(token)
    return found or {DEFAULT_LANGUAGE: None}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _load(cls, loader, config: ModelConfig, options: dict | None, device: torch.device | None, **extra) -> Loaded:
    """Weights once, fp16 on CUDA and fp32 on CPU, in eval mode."""
    hf_logging.disable_progress_bar()  # per-weight bars from every actor would drown the job's own progress
    device = device or default_device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tokenizer = _pretrained(AutoTokenizer, config, options, "tokenizer")
    pickled = _pickle_only(local_path(config, options))
    if pickled and not config.allow_pickle_weights:
        raise ModelError(
            f"{config.name!r} has only pickle weights ({', '.join(pickled)}), and unpickling can run code, so only "
            "safetensors load. Convert it where you trust it (from_pretrained, then save_pretrained writes "
            "safetensors), or pass --allow-pickle-weights if you trust where it came from"
        )
    safetensors_only = True if not config.allow_pickle_weights else None  # None: safetensors first, else pickle
    model = _pretrained(loader, config, options, "weights", use_safetensors=safetensors_only, dtype=dtype)
    model.to(device).eval()
    return cls(model, tokenizer, device, dtype, config.name, config.revision, **extra)


def load(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Captioner:
    """A ViT-GPT2 style ``VisionEncoderDecoderModel`` captioner."""
    return _load(Captioner, VisionEncoderDecoderModel, config, options, device, info=describe(config, options))


def load_translator(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Loaded:
    """A sequence-to-sequence translation model (MarianMT style)."""
    return _load(Loaded, AutoModelForSeq2SeqLM, config, options, device)


def load_scorer(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Scorer:
    """A CLIP model for image-text alignment scores."""
    return _load(Scorer, CLIPModel, config, options, device, image=describe_scorer(config, options))
