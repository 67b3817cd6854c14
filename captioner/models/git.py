"""GIT (``GitForCausalLM``): one transformer decoder over CLIP image tokens then text, as ``microsoft/git-base``,
``git-base-coco`` and the VATEX video models. No Ray here.

Image tokens are the prefill; text steps then run on the cached keys and values. A checkpoint with
``num_image_with_embedding`` takes several frames per caption as (B, F, 3, H, W). It writes one language.
It has no static cache (captions take the plain path when fast generation is asked for): its prefill puts the image
tokens and the prompt under one attention mask, which transformers 5's static-cache mask does not fit.
"""

import torch
from transformers import GitForCausalLM, PretrainedConfig, PreTrainedModel

from ..media.image import ImageSpec
from .family import DEFAULT_LANGUAGE, Checkpoint, Family


class Git(Family):
    name = "GIT"
    model_types = ("git",)
    loader = GitForCausalLM
    example = "microsoft/git-base-coco"

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        config = checkpoint.config
        start = config.bos_token_id if config.bos_token_id is not None else checkpoint.tokenizer.cls_token_id
        return {DEFAULT_LANGUAGE: (start,)}

    def frames(self, config: PretrainedConfig) -> int:
        return config.num_image_with_embedding or 1

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        return pixels  # (B, [F,] 3, H, W): GIT's generate embeds the frames at prefill, once per caption

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        return model.generate(pixel_values=encoded, input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              **search)

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        inputs = sequences[:, :-1]
        logits = model(pixel_values=encoded, input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits
        return logits[:, -inputs.shape[1]:]  # (B, L-1, V): the text positions, after the image tokens
