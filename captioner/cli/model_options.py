"""The model options of ``captioner run`` and ``submit``: which captioner, which languages, which prompts."""

import argparse

from ..config import CAPTION_STYLES, DEMO_MODEL, DTYPES, LANGUAGE_PROMPTS, ModelConfig, RunConfig
from .options import csv


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``model`` option group."""
    m = parser.add_argument_group("model")
    m.add_argument("--model", default=DEMO_MODEL, help="Hugging Face hub id, local folder or s3:// folder of a "
                   "captioner: a vision encoder-decoder (ViT-GPT2, CLIP-vision + mBART-50...), GIT, BLIP, "
                   "Florence-2, PaliGemma (1 or 2), Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM or Idefics3 "
                   "checkpoint; its family is read from its config (default: the bundled demo model)")
    m.add_argument("--revision", help="hub branch, tag or commit of --model")
    m.add_argument("--model-cache", default=ModelConfig.cache_dir,
                   help="where each node keeps its copy of an object-store model (default: %(default)s)")
    m.add_argument("--languages", type=csv, default=("en",),
                   help="comma-separated language codes, one caption row each (default: en). A language the "
                   "captioner has a language token for is written natively, others need --translate")
    m.add_argument("--translate", type=_translation, action="append", default=[], metavar="LANG=MODEL[,LANG=MODEL]",
                   help="write LANG by translating the source caption with a sequence-to-sequence model (hub id, "
                   "folder or s3:// folder, MarianMT style, e.g. fr=Helsinki-NLP/opus-mt-en-fr); repeatable")
    m.add_argument("--source-language", default=RunConfig.source_language,
                   help="language that translations start from; must be in --languages (default: %(default)s)")
    m.add_argument("--clip-model", help="CLIP model (hub id, folder or s3:// folder) that fills clip_score: "
                   "2.5 * max(cosine(image, caption), 0)")
    m.add_argument("--num-candidates", type=int, default=RunConfig.num_candidates,
                   help="generate N captions per image and language and keep the best by CLIP score "
                   "(needs --clip-model; default: %(default)s)")
    m.add_argument("--safetensors-only", action="store_true",
                   help="refuse checkpoints with only pickle weights (pytorch_model.bin). Without it they load "
                   "through torch's weights-only unpickler, which refuses any pickle that would run code")
    m.add_argument("--dtype", choices=DTYPES, default=ModelConfig.dtype,
                   help="model weights and activations: auto is bf16 on GPUs that support it, else fp16, and fp32 "
                   "on CPU (default: %(default)s)")
    m.add_argument("--language-prompt", choices=LANGUAGE_PROMPTS, default=ModelConfig.language_prompt,
                   help="for decoders with mBART-50 language codes: the code is the decoder start (start, as "
                   "CLIP-Vision-mBART50 was trained) or follows it (after-start, mBART-50's own way); auto reads "
                   "it from the checkpoint's decoder start token (default: %(default)s)")
    m.add_argument("--caption-style", choices=CAPTION_STYLES, default=ModelConfig.caption_style,
                   help="short: one sentence; detailed: a few sentences; paragraph: a whole description. Florence-2 "
                   "runs its task for the style (<CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION>), chat "
                   "models (Qwen-VL, SmolVLM) get the style's instruction; other families have only short "
                   "(default: %(default)s)")
    m.add_argument("--prompt", metavar="TEXT",
                   help="chat models: the instruction after the image, '{language}' becoming the language's English "
                   "name, e.g. 'Describe this photo in {language} for a blind reader.' (default: the style's)")
    m.add_argument("--image-size", type=_image_size, metavar="WxH",
                   help="models that take any size (Qwen-VL): the size every image is resized to, rounded to the "
                   "model's patch grid and kept within its processor's pixel limits, so batches share one shape "
                   "(default: 448x448)")



def model_config(args: argparse.Namespace) -> ModelConfig:
    """The parsed model options as the frozen config the library takes."""
    return ModelConfig(name=args.model, revision=args.revision, cache_dir=args.model_cache,
                       safetensors_only=args.safetensors_only, dtype=args.dtype, language_prompt=args.language_prompt,
                       caption_style=args.caption_style, prompt=args.prompt, image_size=args.image_size)


def _translation(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in csv(value):
        lang, sep, model = part.partition("=")
        if not sep or not lang.strip() or not model.strip():
            raise argparse.ArgumentTypeError(f"expected LANG=MODEL, e.g. fr=Helsinki-NLP/opus-mt-en-fr, got {part!r}")
        pairs.append((lang.strip(), model.strip()))
    return tuple(pairs)


def _image_size(value: str) -> tuple[int, int]:
    """``640x480`` -> (640, 480)."""
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 448x448, got {value!r}") from None
    return width, height
