"""BLIP (``BlipForConditionalGeneration``): a ViT whose patch features a BERT-style text decoder
cross-attends to, as ``Salesforce/blip-image-captioning-base``, which LAION-COCO used. No Ray here.

Captions start from the decoder's BOS token and end at its SEP token, as BLIP's own ``generate`` does.
It writes one language. It has no static cache (captions take the plain path when fast generation is asked for):
transformers does not mark its text decoder as one that compiles, and a static cache without CUDA graphs buys nothing.
"""

import torch
from transformers import BlipForConditionalGeneration, PreTrainedModel, PreTrainedTokenizerBase

from ..media.image import ImageSpec
from .family import DEFAULT_LANGUAGE, Checkpoint, Family


class Blip(Family):
    name = "BLIP"
    model_types = ("blip",)
    loader = BlipForConditionalGeneration
    example = "Salesforce/blip-image-captioning-base"

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        return {DEFAULT_LANGUAGE: (checkpoint.config.text_config.bos_token_id,)}

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        return model.vision_model(pixel_values=pixels).last_hidden_state  # (B, P, D)

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        text = model.config.text_config
        return model.text_decoder.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), eos_token_id=text.sep_token_id,
            pad_token_id=text.pad_token_id, encoder_hidden_states=encoded,
            encoder_attention_mask=torch.ones(encoded.shape[:2], dtype=torch.long, device=encoded.device), **search,
        )

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        inputs = sequences[:, :-1]
        return model.text_decoder(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), encoder_hidden_states=encoded,
            encoder_attention_mask=torch.ones(encoded.shape[:2], dtype=torch.long, device=encoded.device),
        ).logits  # (B, L-1, V)

    def end_ids(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        return [model.config.text_config.sep_token_id]
