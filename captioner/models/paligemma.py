"""PaliGemma and PaliGemma 2 (``PaliGemmaForConditionalGeneration``): a SigLIP vision tower and a linear projector
whose image tokens, with the task prompt, form a prefix that a Gemma (PaliGemma 1) or Gemma 2 (PaliGemma 2) decoder
attends to both ways; the caption is the causal suffix. As ``google/paligemma2-3b-mix-224``. No Ray here.

Languages: each is prompted with the mix checkpoints' caption task, ``caption xx``, through the checkpoint's own
processor (which puts the image tokens and BOS first and a newline last). Styles: ``short`` only; ``describe xx``
is documented for the pretrained checkpoints, not the mix ones, so a longer style is refused by name.
The vision tower and projector run once per image (``encode``); generation takes the projected features back
as transformers' own pre-encoded image output.

Fast path: PaliGemma 1 captions on a static cache (its prefix mask is made by the model's own
``create_masks_for_generate`` from the prompt's token types), token for token the plain path (tested without
compiling; compiled by inductor on a CPU once by hand, not yet under CUDA graphs).
PaliGemma 2 takes the plain path: Gemma 2 alternates sliding-window and global layers, so on a static cache
transformers 5's ``generate`` makes one mask per layer type, a dict that PaliGemma's forward hands to
``create_causal_mask``, which fails on it.
"""

import torch
from PIL import Image
from transformers import Cache, PaliGemmaForConditionalGeneration, PreTrainedModel, StaticCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..media.image import ImageSpec
from .family import Checkpoint, Family

# The languages of the ``caption {lang}`` task the mix checkpoints were trained on: COCO-35L's 35, as
# big_vision's configs/proj/paligemma/transfers/coco35l.py lists them (ai.google.dev's PaliGemma prompt page
# points there for the language codes; XM3600 adds Quechua, "quz", which COCO-35L has not).
LANGUAGES = ("ar", "bn", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fil", "fr", "he", "hi", "hr", "hu", "id",
             "it", "ja", "ko", "mi", "nl", "no", "pl", "pt", "ro", "ru", "sv", "sw", "te", "th", "tr", "uk", "vi", "zh")
TASKS = {"short": "caption"}  # caption style -> the task word before the language code


class PaliGemma(Family):
    name = "PaliGemma"
    model_types = ("paligemma",)
    loader = PaliGemmaForConditionalGeneration
    example = "google/paligemma2-3b-mix-224"
    styles = tuple(TASKS)

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        # The processor's own ids on a blank image of the run's size: its image tokens, BOS and newline.
        processor = checkpoint.processor()
        blank = Image.new("RGB", (image.resize.width, image.resize.height))
        task = TASKS[checkpoint.settings.caption_style]
        return {lang: tuple(processor(text=[f"{processor.image_token}{task} {lang}"], images=[blank],
                                      return_tensors="pt").input_ids[0].tolist()) for lang in LANGUAGES}

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        return model.get_image_features(pixel_values=pixels).pooler_output  # (B, N, D): projected patches

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        # The whole prompt is the prefix (token type 0); generate marks each new token as suffix. Beam search
        # expands the image output in place: each call gets its own.
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              token_type_ids=torch.zeros_like(prompt), mm_encoder_outputs=_image(encoded), **search)

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        inputs = sequences[:, :-1]  # (B, L-1)
        types = torch.ones_like(inputs)
        types[:, :prompt_length] = 0  # the prefix, attended both ways; the caption causally
        return model(input_ids=inputs, attention_mask=torch.ones_like(inputs), token_type_ids=types,
                     mm_encoder_outputs=_image(encoded)).logits  # (B, L-1, V)

    def static_cache(self, model: PreTrainedModel, length: int, encoded: torch.Tensor) -> Cache | None:
        text = model.config.get_text_config()
        if hasattr(text, "layer_types"):  # masks by layer type (Gemma 2): see the module docstring
            return None
        return StaticCache(config=text, max_cache_len=length)  # image tokens, prompt and caption


def _image(encoded: torch.Tensor) -> dict[str, BaseModelOutputWithPooling]:
    """Projected image features as the model's forward and generate take pre-encoded images."""
    return {"image": BaseModelOutputWithPooling(pooler_output=encoded)}
