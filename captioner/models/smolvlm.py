"""SmolVLM and Idefics3 (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``): a SigLIP-style
vision tower whose patches a pixel shuffle and a projection turn into image tokens of a Llama-style chat decoder, as
``HuggingFaceTB/SmolVLM-256M-Instruct`` (an Idefics3 checkpoint), ``HuggingFaceM4/Idefics3-8B-Llama3`` and SmolVLM2
(``HuggingFaceTB/SmolVLM2-256M-Video-Instruct``). No Ray here.

Each image is one tile. Their processors would cut a large image into tiles plus a global image, so the image token
count would vary with its size and batches could not share one shape; with splitting off they resize the long side
(keeping the aspect ratio) and then stretch to the square tile the vision tower takes, which the decode stage does
once on the CPU (``Resize.long_side``), and padding and the pixel mask then change nothing. Prompts come from the
checkpoint's chat template and processor with splitting off too (``chat.prompts``): one image, as
``<fake_token_around_image><global-img>`` then ``<image>`` per image token, then ``<fake_token_around_image>``.
SmolVLM2's processor loads as Idefics3's: its own adds video, whose processor needs torchvision in transformers 5,
and for one image the two write the same tokens.

The vision tower and projection run once per image (``get_image_features``); each language's prompt then generates
from those features, which transformers' ``generate`` takes back as ``mm_encoder_outputs`` at the prefill.
No static cache (captions take the plain path when fast generation is asked for): transformers does not mark either
model as one that compiles (``_can_compile_fullgraph``), only their text decoder, and a static cache without CUDA
graphs buys nothing.
"""

import torch
from transformers import (
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedModel,
    SmolVLMForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..media.image import ImageSpec, Resize
from . import chat
from .family import Checkpoint, Family
from .preprocess import normalisation

# The longest side their image processors ever let through (larger resizes are scaled down again).
MAX_LONG_SIDE = 4096


class Idefics3(Family):
    name = "Idefics3"
    model_types = ("idefics3",)
    loader = Idefics3ForConditionalGeneration
    example = "HuggingFaceTB/SmolVLM-256M-Instruct"
    styles = ("short", "detailed", "paragraph")
    takes_prompt = True

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        processor = checkpoint.processor()
        processor.image_processor.do_image_splitting = False  # one tile, as ``image`` sizes it
        return chat.prompts(processor, checkpoint.settings, image)

    def image(self, checkpoint: Checkpoint) -> ImageSpec:
        processor, tower = checkpoint.image_processor, checkpoint.config.vision_config
        tile = processor.max_image_size["longest_edge"]
        if tile != tower.image_size:
            raise ValueError(f"its image processor makes tiles of {tile} px, its vision tower takes "
                             f"{tower.image_size} px")
        long_side = processor.size["longest_edge"] if processor.do_resize else None
        if long_side is not None and long_side > MAX_LONG_SIDE:
            raise ValueError(f"its image processor resizes the long side to {long_side} px, over {MAX_LONG_SIDE}")
        resize = Resize(tile, tile, resample=int(processor.resample), long_side=long_side)
        return ImageSpec(resize=resize, **normalisation(processor))

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        features = model.get_image_features(pixel_values=pixels[:, None])  # one tile each: (B, 1, 3, H, W) in
        return torch.stack(features.pooler_output)  # (B, N, D): N image tokens per image

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        # generate() expands the features in place for beam search: hand it its own wrapper.
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              mm_encoder_outputs=_features(encoded), **search)

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        # The features fill the prompt's image tokens, as at generate's prefill; attention is causal, so padding
        # after a sequence's end never reaches the positions that are scored.
        inputs = sequences[:, :-1]
        return model(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                     mm_encoder_outputs=_features(encoded)).logits  # (B, L-1, V)


class SmolVLM(Idefics3):
    name = "SmolVLM"
    model_types = ("smolvlm",)
    loader = SmolVLMForConditionalGeneration
    example = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    processor_loader = Idefics3Processor


def _features(encoded: torch.Tensor) -> dict[str, BaseModelOutputWithPooling]:
    """(B, N, D) image features as the models' ``mm_encoder_outputs``."""
    return {"image": BaseModelOutputWithPooling(pooler_output=encoded)}
