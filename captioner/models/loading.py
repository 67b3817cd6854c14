"""Loading captioners, translators and image-text scorers from a hub id, a local folder or an
object-store folder. No Ray here.

A captioner loads into its family's own class, never another. Weights load from safetensors, or from pickle
through torch's weights-only unpickler, which refuses anything but tensors (``safetensors_only`` refuses every
pickle); ``trust_remote_code`` stays off: a checkpoint can never run code of its own on our workers.
Object-store folders are copied file by file to paths checked to stay inside the copy, whatever their keys hold.
"""

import hashlib
import logging
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass, field

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    CLIPModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from ..config import ModelConfig, UserError
from .families import family_of, supported
from .family import Checkpoint, Family
from .preprocess import ImageSpec, image_spec

log = logging.getLogger(__name__)

class ModelError(UserError, ValueError):
    """The model cannot be used as asked; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """Everything the driver needs of a captioner before any worker loads weights."""

    family: Family
    image: ImageSpec
    languages: dict[str, tuple[int, ...]]  # each language written natively -> the ids its captions start from


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
    # The fast path's static KV caches by batch shape (``fast.py``), kept: CUDA graphs replay on the same tensors
    caches: dict[tuple, object] = field(default_factory=dict, repr=False, compare=False)
    # Each shape's check of the fast path against plain generate (``fast._first``), for the run record
    checks: list[dict] = field(default_factory=list, repr=False, compare=False)


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
        # Imported here: the store (fsspec, S3, Arrow) serves object-store folders only, so loading a local model
        # needs nothing but torch and transformers, as on a bare GPU machine (benchmarks/gpu.sh).
        from ..store import fs as storage

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


def _hub_kwargs(config: ModelConfig) -> dict:
    return {"revision": config.revision} if config.revision else {}


def _pretrained(loader, config: ModelConfig, options: dict | None, what: str, **kwargs):
    """``loader.from_pretrained`` with an error message that says what to pass instead."""
    try:
        return loader.from_pretrained(local_path(config, options), **_hub_kwargs(config), trust_remote_code=False,
                                      **kwargs)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"the pickle weights of {config.name!r} hold more than tensors: unpickling them would run "
                         "code, so they were refused unread. Convert the checkpoint to safetensors where you trust "
                         "it") from exc
    except OSError as exc:
        raise ModelError(
            f"cannot load the {what} of {config.name!r}: {exc}. Pass a local folder, an s3:// folder, or a hub "
            "id that is reachable (or already in the Hugging Face cache)"
            + ("; with --safetensors-only, weights must be safetensors" if config.safetensors_only else "")
        ) from exc
    except ValueError as exc:
        if "trust_remote_code" not in str(exc) and "custom code" not in str(exc):
            raise
        raise ModelError(f"the {what} of {config.name!r} needs code shipped with the checkpoint; captioner never "
                         "runs checkpoint code. Use a checkpoint built from transformers' own classes") from exc


def describe(config: ModelConfig, options: dict | None = None) -> ModelInfo:
    """Read a captioner's config, image processor and tokenizer (no weights) to plan a run; refuse a checkpoint
    no family loads, or settings its family cannot follow, before any work starts."""
    model_config = _pretrained(AutoConfig, config, options, "config")
    family = family_of(model_config)
    if family is None:
        raise ModelError(f"{config.name!r} is a {model_config.model_type!r} checkpoint "
                         f"({', '.join(model_config.architectures or [])}), which captioner cannot caption with; "
                         f"it captions with: {supported()}")
    _check_settings(family, config)
    checkpoint = Checkpoint(
        config=model_config, tokenizer=_pretrained(AutoTokenizer, config, options, "tokenizer"),
        image_processor=_pretrained(AutoImageProcessor, config, options, "image processor"), settings=config,
        processor=lambda: _pretrained(family.processor_loader, config, options, "processor"))
    try:
        image = family.image(checkpoint)
        return ModelInfo(family, image, family.prompts(checkpoint, image))
    except ValueError as exc:
        raise ModelError(f"{config.name!r}: {exc}") from None


def _check_settings(family: Family, config: ModelConfig) -> None:
    """A caption style, prompt or image size the family has no use for is refused by name, never ignored."""
    if config.caption_style not in family.styles:
        raise ModelError(f"{config.name!r} is a {family.name} checkpoint, which writes only "
                         f"{', '.join(family.styles)} captions; leave out --caption-style {config.caption_style}")
    if config.prompt is not None and not family.takes_prompt:
        raise ModelError(f"{config.name!r} is a {family.name} checkpoint, which takes no instruction; --prompt is "
                         "for chat models (Qwen-VL, SmolVLM)")
    if config.image_size is not None and not family.takes_image_size:
        raise ModelError(f"{config.name!r} is a {family.name} checkpoint, whose processor fixes the image size; "
                         "leave out --image-size")


def load_tokenizer(config: ModelConfig, options: dict | None = None) -> PreTrainedTokenizerBase:
    """A model's tokenizer alone, to check before any work what a translator can do."""
    return _pretrained(AutoTokenizer, config, options, "tokenizer")


def describe_scorer(config: ModelConfig, options: dict | None = None) -> ImageSpec:
    return image_spec(_pretrained(AutoImageProcessor, config, options, "image processor"))


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on GPUs that have it, else fp16; fp32 on CPU. Otherwise the dtype named."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _weights(config: ModelConfig, options: dict | None) -> dict:
    """How ``from_pretrained`` may read the weights: safetensors first; pickle only through torch's weights-only
    unpickler (transformers' default, which stops at anything but tensors) unless ``safetensors_only``."""
    if config.safetensors_only:
        return {"use_safetensors": True}
    path = local_path(config, options)
    if os.path.isdir(path) and not any(n.endswith(".safetensors") for n in os.listdir(path)):
        log.info("%s has only pickle weights: loading them with torch's weights-only unpickler", config.name)
    return {"use_safetensors": None, "weights_only": True}


def _load(cls, loader, config: ModelConfig, options: dict | None, device: torch.device | None, **extra) -> Loaded:
    """Weights once, in the configured dtype on the device, in eval mode."""
    hf_logging.disable_progress_bar()  # per-weight bars from every actor would drown the job's own progress
    device = device or default_device()
    dtype = torch_dtype(config.dtype, device)
    tokenizer = _pretrained(AutoTokenizer, config, options, "tokenizer")
    model = _pretrained(loader, config, options, "weights", dtype=dtype, **_weights(config, options))
    model.to(device).eval()
    return cls(model, tokenizer, device, dtype, config.name, config.revision, **extra)


def load(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Captioner:
    """A captioner of any family, loaded into its family's class."""
    info = describe(config, options)
    return _load(Captioner, info.family.loader, config, options, device, info=info)


def load_translator(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Loaded:
    """A sequence-to-sequence translation model (MarianMT style)."""
    return _load(Loaded, AutoModelForSeq2SeqLM, config, options, device)


def load_scorer(config: ModelConfig, options: dict | None = None, device: torch.device | None = None) -> Scorer:
    """A CLIP model for image-text alignment scores."""
    return _load(Scorer, CLIPModel, config, options, device, image=describe_scorer(config, options))
