"""Any vision encoder (ViT, CLIP vision, DeiT, Swin...) with any causal decoder (GPT-2, mBART, BERT-style)
joined by cross-attention: ViT-GPT2, CLIP-Vision-mBART50 and the bundled demo model. No Ray here.

The encoder runs once per image whatever the number of languages. Languages come from our ``<|xx|>`` tokens
(the start token, then the language's), from mBART-50 language codes (ISO ``de`` is the tokenizer's ``de_DE``),
or else the checkpoint writes one language.
"""

import torch
from transformers import (
    Cache,
    EncoderDecoderCache,
    PreTrainedModel,
    StaticCache,
    VisionEncoderDecoderModel,
)
from transformers.modeling_outputs import BaseModelOutput

from ..media.image import ImageSpec
from .family import DEFAULT_LANGUAGE, Checkpoint, Family, code_languages, token_languages


class VisionEncoderDecoder(Family):
    name = "vision encoder-decoder"
    model_types = ("vision-encoder-decoder",)
    loader = VisionEncoderDecoderModel
    example = "nlpconnect/vit-gpt2-image-captioning"

    def prompts(self, checkpoint: Checkpoint, image: ImageSpec) -> dict[str, tuple[int, ...]]:
        config, tokenizer, language_prompt = checkpoint.config, checkpoint.tokenizer, checkpoint.settings.language_prompt
        start = config.decoder_start_token_id
        if start is None:
            start = config.decoder.bos_token_id
        tokens = token_languages(tokenizer)
        if tokens:
            return {lang: (start, token) for lang, token in tokens.items()}
        codes = code_languages(tokenizer)
        if codes:
            if language_prompt == "auto":
                # Trained with the code as the decoder start (CLIP-Vision-mBART50), or mBART-50's own way:
                # end-of-sentence first, then the code. The checkpoint's decoder start tells which.
                language_prompt = "start" if start in codes.values() else "after-start"
            if language_prompt == "start":
                return {lang: (code,) for lang, code in codes.items()}
            return {lang: (start, code) for lang, code in codes.items()}
        return {DEFAULT_LANGUAGE: (start,)}

    def encode(self, model: PreTrainedModel, pixels: torch.Tensor) -> torch.Tensor:
        return model.encoder(pixel_values=pixels).last_hidden_state  # (B, P, D)

    def generate(self, model: PreTrainedModel, encoded: torch.Tensor, prompt: torch.Tensor, **search):
        # generate() expands what it is given in place for beam search: hand it its own wrapper. It would put the
        # checkpoint's decoder start before a prompt that starts otherwise (a language code as the start).
        return model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded), decoder_input_ids=prompt,
                              decoder_attention_mask=torch.ones_like(prompt), decoder_start_token_id=int(prompt[0, 0]),
                              **search)

    def logits(self, model: PreTrainedModel, encoded: torch.Tensor, sequences: torch.Tensor,
               prompt_length: int) -> torch.Tensor:
        # Attention is causal, so padding after a sequence's end never reaches the positions that are scored.
        inputs = sequences[:, :-1]
        return model(encoder_outputs=BaseModelOutput(last_hidden_state=encoded), decoder_input_ids=inputs,
                     decoder_attention_mask=torch.ones_like(inputs)).logits  # (B, L-1, V)

    def static_cache(self, model: PreTrainedModel, length: int, encoded: torch.Tensor) -> Cache | None:
        # transformers marks the decoders whose attention runs on a static cache under torch.compile (GPT-2, mBART,
        # BART, Marian); a BERT-style decoder is not marked and takes the plain path.
        if not model._can_compile_fullgraph:
            return None
        decoder = model.config.decoder
        return EncoderDecoderCache(StaticCache(config=decoder, max_cache_len=length),  # self-attention: the caption
                                   StaticCache(config=decoder, max_cache_len=encoded.shape[1]))  # cross: the patches
