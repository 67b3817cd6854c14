"""Florence-2 (``Florence2ForConditionalGeneration``): a DaViT vision tower and projector whose image tokens, with the
task prompt, go through a BART encoder that a BART decoder attends to, as ``florence-community/Florence-2-base`` and
``-large``. No Ray here.

The caption style is the task: ``<CAPTION>``, ``<DETAILED_CAPTION>`` or ``<MORE_DETAILED_CAPTION>``, which the
checkpoint's own processor turns into its phrase after the image tokens, so the prompt ids are exactly what it gives
an image of the run's size. It writes English only. The vision tower and projector run once per image (``encode``);
the BART encoder reads the prompt with those features in ``generate`` and in ``logits``.

The decoder starts from ``</s><s>``: its start token and the ``<s>`` Florence-2 writes first (its training labels begin
with it, and its BART generation config forces it), given rather than generated, so ``--max-new-tokens`` counts
caption tokens and scores leave ``<s>`` out. ``generate``'s sequences carry the encoder prompt before that start, so
that ``logits`` reads the whole of what was generated from them: the caption starts after both.

It has a static cache (the fast path): BART's decoder runs on one under ``torch.compile``, as in the vision
encoder-decoder family. Its self-attention part holds the start and the caption; its cross-attention part must hold
exactly the encoder's length, the prompt's, which ``static_cache`` is not told: ``generate`` sizes it on the first
batch and keeps it.
"""

import torch
from PIL import Image
from transformers import (
    Cache,
    EncoderDecoderCache,
    Florence2ForConditionalGeneration,
    PreTrainedModel,
    StaticCache,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..media.image import ImageSpec
from .family import DEFAULT_LANGUAGE, Checkpoint, Family

TASKS = {"short": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "paragraph": "<MORE_DETAILED_CAPTION>"}
START = 2  # decoder tokens before the caption: the decoder start </s>, then <s>


class Florence2(Family):
    name = "Florence-2"
    model_types = ("florence2",)
    loader = Florence2ForConditionalGeneration
    example = "florence-community/Florence-2-base"
    styles = tuple(TASKS)

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        blank = Image.new("RGB", (image.resize.width, image.resize.height))
        task = TASKS[checkpoint.settings.caption_style]
        ids = checkpoint.processor()(text=[task], images=[blank], return_tensors="pt").input_ids[0]
        return {DEFAULT_LANGUAGE: tuple(ids.tolist())}  # image tokens, <s>, the task's phrase, </s>

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        return model.get_image_features(pixel_values=pixels).pooler_output  # (B, N, D): N image tokens

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        if search.get("cache") is not None:
            _fit_cross_attention(model, search["cache"], prompt.shape[1])
        # generate() expands what it is given in place for beam search: hand it its own wrapper.
        features = BaseModelOutputWithPooling(pooler_output=encoded)
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                             mm_encoder_outputs={"image": features}, decoder_input_ids=_start(model, prompt),
                             **search)
        copies = out.sequences.shape[0] // prompt.shape[0]  # num_return_sequences
        out.sequences = torch.cat([prompt.repeat_interleave(copies, dim=0), out.sequences], dim=1)  # (B*n, P+2+T)
        return out

    def caption_start(self, prompt_length: int) -> int:
        return prompt_length + START

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        length = prompt_length  # the encoder's part of the sequences
        prompt, decoder = sequences[:, :length], sequences[:, length:-1]  # (B, P), (B, L-P-1)
        embeds = model.get_input_embeddings()(prompt)  # (B, P, D)
        image = model.get_placeholder_mask(prompt, inputs_embeds=embeds, image_features=encoded)
        embeds = embeds.masked_scatter(image, encoded.to(embeds.dtype))  # the image tokens' places get the features
        # Attention is causal, so padding after a sequence's end never reaches the positions that are scored.
        logits = model(inputs_embeds=embeds, attention_mask=torch.ones_like(prompt),
                       decoder_input_ids=decoder).logits  # (B, L-P-1, V)
        before = logits.new_zeros(logits.shape[0], length, logits.shape[2])  # the encoder's tokens predict nothing
        return torch.cat([before, logits], dim=1)  # (B, L-1, V)

    def static_cache(self, model: PreTrainedModel, length: int, encoded: torch.Tensor) -> Cache | None:
        # ``length`` is the prompt's and the new tokens'; the decoder holds the new tokens after a start shorter than
        # the prompt's text (<s>, its phrase, </s>), so the image tokens need no room. The cross-attention part is
        # made to the encoder's length on the first batch (``_fit_cross_attention``).
        return EncoderDecoderCache(StaticCache(config=model.config, max_cache_len=length - encoded.shape[1]),
                                   StaticCache(config=model.config, max_cache_len=length))


def _start(model: PreTrainedModel, prompt: torch.Tensor) -> torch.Tensor:
    """(B, 2) decoder start: </s> <s>."""
    config = model.generation_config
    bos = config.forced_bos_token_id if config.forced_bos_token_id is not None else config.bos_token_id
    return torch.tensor([[config.decoder_start_token_id, bos]] * prompt.shape[0], device=prompt.device)


def _fit_cross_attention(model: PreTrainedModel, cache: EncoderDecoderCache, encoder_length: int) -> None:
    """A static cross-attention cache holds exactly the encoder's keys: unfilled places would be attended to. Made
    once per cache (its tensors then keep their addresses, as CUDA graphs need), again only if the prompt changed."""
    if cache.cross_attention_cache.get_max_length() != encoder_length:
        cache.cross_attention_cache = StaticCache(config=model.config, max_cache_len=encoder_length)
