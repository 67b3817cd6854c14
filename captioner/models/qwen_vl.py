"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
``Qwen3VLForConditionalGeneration``): a vision tower over a grid of patches of any size, merged 2 x 2 into image
tokens of a chat decoder whose rope positions are 3D over the image (time, row, column), as
``Qwen/Qwen2.5-VL-3B-Instruct``, ``Qwen/Qwen2-VL-2B-Instruct`` and ``Qwen/Qwen3-VL-2B-Instruct``. No Ray here.

Their processors size each image to its own patch grid (its aspect ratio kept, its pixels within the processor's
limits), so image token counts would vary by image and batches could not share one shape. A run takes one size
instead: ``--image-size WxH`` rounded to the patch grid as the processor rounds (``smart_resize``), by default
``DEFAULT_SIDE`` square within the processor's pixel limits, which the decode stage stretches every image to on
the CPU; an image already of that size gets exactly the processor's pixel values. The device flattens the
normalised pixels into patches in the processor's order (``patches``), each frame twice for the tower's temporal
patch, as the processor does for a still image.

Prompts are one user message, the image then the instruction, through the checkpoint's own chat template, with
the image placeholder repeated once per image token as the processor does. The processors themselves are not
built: in transformers 5 they need torchvision for their video half, which captions never use; the template
is read as the processor reads it (``ProcessorMixin.get_processor_dict``).

The vision tower runs once per image (``get_image_features``; Qwen3-VL's also gives the features its decoder's
first layers add, "deepstack"); each language's prompt then generates from them, handed back to ``generate`` as
``mm_encoder_outputs`` with the image grid, from which transformers computes the 3D rope positions of the prompt
(``get_rope_index``) exactly as for the processor's inputs. No static cache (the plain path): transformers keeps
each prefill's rope offsets on the model (``rope_deltas``) for the steps that follow, state that a step compiled
into CUDA graphs would not see change.
"""

import torch
from transformers import (
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures
from transformers.processing_utils import ProcessorMixin

from ..config import CAPTION_STYLES
from ..media.image import ImageSpec, Resize
from . import chat
from .family import Checkpoint, Encoded, Family
from .preprocess import normalisation

DEFAULT_SIDE = 448  # px: a run's default square input (256 image tokens at Qwen2.5-VL's 28 px grid)
IMAGE_TOKEN = "<|image_pad|>"  # the placeholder the processor repeats once per image token


class ChatTemplate:
    """Loads a checkpoint's chat template as its processor would, without building the processor."""

    @staticmethod
    def from_pretrained(name: str, **kwargs) -> str:
        template = ProcessorMixin.get_processor_dict(name, **kwargs)[0].get("chat_template")
        if not isinstance(template, str):
            raise ValueError("it has no chat template (chat_template.jinja or chat_template.json) of one template")
        return template


class Qwen2VL(Family):
    name = "Qwen2-VL"
    model_types = ("qwen2_vl",)
    loader = Qwen2VLForConditionalGeneration
    example = "Qwen/Qwen2-VL-2B-Instruct"
    styles = CAPTION_STYLES
    takes_prompt = True
    takes_image_size = True
    processor_loader = ChatTemplate

    def image(self, checkpoint: Checkpoint) -> ImageSpec:
        processor, tower = checkpoint.image_processor, checkpoint.config.vision_config
        if (processor.patch_size, processor.merge_size) != (tower.patch_size, tower.spatial_merge_size):
            raise ValueError(f"its image processor makes {processor.patch_size} px patches merged "
                             f"{processor.merge_size} x {processor.merge_size}, its vision tower takes "
                             f"{tower.patch_size} px merged {tower.spatial_merge_size} x {tower.spatial_merge_size}")
        width, height = checkpoint.settings.image_size or (DEFAULT_SIDE, DEFAULT_SIDE)
        height, width = smart_resize(height, width, factor=processor.patch_size * processor.merge_size,
                                     min_pixels=processor.size["shortest_edge"],
                                     max_pixels=processor.size["longest_edge"])
        return ImageSpec(resize=Resize(height, width, resample=int(processor.resample)), **normalisation(processor))

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        tokenizer, template = checkpoint.tokenizer, checkpoint.processor()
        patch, merge = checkpoint.image_processor.patch_size, checkpoint.image_processor.merge_size
        tokens = image.resize.height // patch * (image.resize.width // patch) // merge**2
        out = {}
        for lang, messages in chat.messages(checkpoint.settings).items():
            text = tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                 tokenize=False)
            if text.count(IMAGE_TOKEN) != 1:
                raise ValueError(f"its chat template writes {text.count(IMAGE_TOKEN)} {IMAGE_TOKEN} for one image")
            out[lang] = tuple(tokenizer(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * tokens)).input_ids)
        return out

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> Encoded:
        flat, grid = patches(pixels, model.config.vision_config)
        out = model.get_image_features(pixel_values=flat, image_grid_thw=grid)
        return torch.stack(out.pooler_output), grid  # (B, N, D) image features, (B, 3) each image's grid

    def generate(self, model: PreTrainedModel, encoded: Encoded, prompt: torch.Tensor, **search):
        return model.generate(**self._inputs(model, encoded, prompt), **search)

    def logits(self, model: PreTrainedModel, encoded: Encoded, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        # Attention is causal and the positions come from the image grid as at generate's prefill, so padding after
        # a sequence's end never reaches the positions that are scored.
        return model(**self._inputs(model, encoded, sequences[:, :-1])).logits  # (B, L-1, V)

    def _inputs(self, model: PreTrainedModel, encoded: Encoded, ids: torch.Tensor) -> dict:
        """What the model takes with (B, L) ``ids`` in place of the processor's pixels: the image features (a new
        wrapper each call, as ``generate`` expands it in place for beam search), the grid the rope positions are
        computed from, and which tokens are the image's."""
        features, grid = encoded[:2]
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids), image_grid_thw=grid,
                    mm_token_type_ids=(ids == model.config.image_token_id).int(),
                    mm_encoder_outputs={"image": self._features(features, encoded[2:])})

    def _features(self, features: torch.Tensor, extra: tuple[torch.Tensor, ...]) -> BaseModelOutputWithPooling:
        return BaseModelOutputWithPooling(pooler_output=features.unbind(0))  # one (N, D) per image


class Qwen2_5VL(Qwen2VL):
    name = "Qwen2.5-VL"
    model_types = ("qwen2_5_vl",)
    loader = Qwen2_5_VLForConditionalGeneration
    example = "Qwen/Qwen2.5-VL-3B-Instruct"


class Qwen3VL(Qwen2VL):
    name = "Qwen3-VL"
    model_types = ("qwen3_vl",)
    loader = Qwen3VLForConditionalGeneration
    example = "Qwen/Qwen3-VL-2B-Instruct"

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> Encoded:
        flat, grid = patches(pixels, model.config.vision_config)
        out = model.get_image_features(pixel_values=flat, image_grid_thw=grid)
        deep = torch.stack([torch.stack(level) for level in out.deepstack_features], dim=1)  # (B, K, N, D)
        return torch.stack(out.pooler_output), grid, deep

    def _features(self, features: torch.Tensor, extra: tuple[torch.Tensor, ...]) -> BaseModelOutputWithPooling:
        (deep,) = extra  # (B, K, N, D): what the decoder's first K layers add at the image tokens
        return BaseModelOutputWithDeepstackFeatures(pooler_output=features.unbind(0), deepstack_features=[
            level.unbind(0) for level in deep.unbind(1)])


def patches(pixels: torch.Tensor, tower) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (B, 3, H, W) -> the processor's flat patches (B * H/p * W/p, 3 * T * p * p), merge blocks
    contiguous and each frame repeated over the tower's T temporal patches, and each image's (1, H/p, W/p) grid."""
    p, m, t = tower.patch_size, tower.spatial_merge_size, tower.temporal_patch_size
    b, c, h, w = pixels.shape
    x = pixels.reshape(b, c, h // p // m, m, p, w // p // m, m, p)  # (B, C, H/pm, m, p, W/pm, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7).unsqueeze(6)  # (B, H/pm, W/pm, m, m, C, 1, p, p)
    x = x.expand(*x.shape[:6], t, p, p)  # (B, H/pm, W/pm, m, m, C, T, p, p)
    grid = torch.tensor([[1, h // p, w // p]] * b, device=pixels.device)  # (B, 3)
    return x.reshape(b * (h // p) * (w // p), c * t * p * p), grid
