"""The parts of a captioner before training: tokenizer, image processor and model, and which of it trains.

Pretrained parts are loaded where given and built from the config otherwise; the tokenizer and
image processor are saved in output_dir once, so every worker and every resumed run uses the
same token ids. Stages unfreeze the model step by step, so a pretrained encoder and decoder are
not disturbed by the randomly initialised cross-attention early on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BaseImageProcessor,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
    VisionEncoderDecoderModel,
)

from ..models.family import code_languages
from .checkpoints import latest_checkpoint
from .config import SPECIAL_TOKENS, TrainConfig, language_token
from .data import read_rows

logger = logging.getLogger(__name__)

# Parameter-name parts of what a VisionEncoderDecoderModel adds to a decoder (GPT-2 and BERT-style, mBART) and
# the projection between encoder and decoder widths: new in stage 1.
CROSS_ATTENTION_PARTS = ("crossattention", "ln_cross_attn", "encoder_attn", "enc_to_dec_proj")
STAGE_NAMES = ("cross-attention", "cross-attention + decoder", "everything")


def train_tokenizer(captions: Sequence[str], languages: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer fitted to `captions`: every byte has a token, so any text round-trips."""
    lang_tokens = [language_token(lang) for lang in languages]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *lang_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, extra_special_tokens=lang_tokens, **SPECIAL_TOKENS)


def add_languages(tokenizer: PreTrainedTokenizerFast, languages: Sequence[str]) -> int:
    """Add the language tokens the tokenizer lacks (resize the model's embeddings after); returns how many."""
    missing = [language_token(lang) for lang in languages if language_token(lang) not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return len(missing)


def fresh_image_processor(image_size: int) -> ViTImageProcessorPil:
    """Resize to the square model input and scale to [-1, 1], as the model was trained."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def prepare_output(config: TrainConfig) -> tuple[PreTrainedTokenizerFast, BaseImageProcessor]:
    """Make the tokenizer and image processor once and save them in output_dir (workers load them there).

    A run that resumes from a checkpoint keeps those already saved, so token ids stay the checkpoint's.
    """
    if latest_checkpoint(config.checkpoints) and os.path.exists(os.path.join(config.output_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(config.output_dir), AutoImageProcessor.from_pretrained(config.output_dir)
    table = read_rows(config.data, columns=("caption", "lang"), options=config.storage.options(config.data))
    captions, languages = table.column("caption").to_pylist(), sorted(set(table.column("lang").to_pylist()))
    if config.init_model:
        tokenizer = AutoTokenizer.from_pretrained(config.init_model)
        processor = AutoImageProcessor.from_pretrained(config.init_model)
    else:
        if config.decoder:
            tokenizer = AutoTokenizer.from_pretrained(config.decoder)
        else:
            tokenizer = train_tokenizer(captions, languages, config.vocab_size)
        if config.encoder:
            processor = _encoder_image_processor(config.encoder)
        else:
            processor = fresh_image_processor(config.image_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    codes = code_languages(tokenizer)
    if codes:  # a decoder with mBART-50 language codes learns to write each language after its own code
        missing = sorted(set(languages) - set(codes))
        if missing:
            raise ValueError(f"the decoder's tokenizer has no language code for {', '.join(missing)}")
    elif add_languages(tokenizer, languages):
        logger.info("added language tokens; the tokenizer now has %d tokens", len(tokenizer))
    os.makedirs(config.output_dir, exist_ok=True)
    tokenizer.save_pretrained(config.output_dir)
    processor.save_pretrained(config.output_dir)
    return tokenizer, processor


def _encoder_image_processor(encoder: str) -> BaseImageProcessor:
    """The pretrained encoder's own processor, or a fresh one for its input size if it ships none."""
    try:
        return AutoImageProcessor.from_pretrained(encoder)
    except OSError:
        return fresh_image_processor(AutoModel.from_pretrained(encoder, use_safetensors=True).config.image_size)


def pretrained_encoder(name: str) -> PreTrainedModel:
    """A pretrained vision encoder: a ViT, DeiT, Swin... as it is, or the vision tower of a whole CLIP model."""
    if AutoConfig.from_pretrained(name).model_type == "clip":
        return CLIPVisionModel.from_pretrained(name, use_safetensors=True)
    return AutoModel.from_pretrained(name, use_safetensors=True)


def fresh_encoder(config: TrainConfig) -> ViTModel:
    """A randomly initialised ViT of the config's sizes, for when no pretrained encoder is given."""
    return ViTModel(ViTConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.encoder_dim,
        num_hidden_layers=config.encoder_layers, num_attention_heads=config.encoder_heads,
        intermediate_size=4 * config.encoder_dim,
    ))


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> VisionEncoderDecoderModel:
    """The captioner to train: loaded where pretrained weights are given, built from configs otherwise.

    Only the cross-attention (and the embedding rows of added tokens) start random on top of a
    pretrained decoder; its LM head is kept.
    """
    if config.init_model:
        model = VisionEncoderDecoderModel.from_pretrained(config.init_model, use_safetensors=True)
    else:
        if config.encoder:
            encoder = pretrained_encoder(config.encoder)
        else:
            encoder = fresh_encoder(config)
        if config.decoder:
            decoder_config = AutoConfig.from_pretrained(config.decoder)
            decoder_config.is_decoder, decoder_config.add_cross_attention = True, True
            decoder = AutoModelForCausalLM.from_pretrained(config.decoder, config=decoder_config, use_safetensors=True)
        else:
            decoder = GPT2LMHeadModel(GPT2Config(
                vocab_size=len(tokenizer), n_positions=config.max_caption_tokens + 8, n_embd=config.decoder_dim,
                n_layer=config.decoder_layers, n_head=config.decoder_heads, add_cross_attention=True, is_decoder=True,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # synthetic data is unlimited; dropout only slows it
            ))
        model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    if model.decoder.get_input_embeddings().num_embeddings < len(tokenizer):
        model.decoder.resize_token_embeddings(len(tokenizer))
    # mBART-50's own way: end-of-sentence starts the decoder, the language code comes next (the first label)
    start = tokenizer.eos_token_id if code_languages(tokenizer) else tokenizer.bos_token_id
    ids = {"decoder_start_token_id": start, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    for name, value in ids.items():
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    model.generation_config.max_new_tokens = config.max_caption_tokens + 1
    return model


def set_stage(model: VisionEncoderDecoderModel, stage: int) -> int:
    """Make trainable what stage 1, 2 or 3 trains; returns the number of trainable parameters.

    The encoder's pooler stays frozen: the captioner never uses it, so it would get no gradient.
    """
    for name, param in model.named_parameters():
        if name.startswith("encoder.pooler."):
            param.requires_grad = False
        elif stage == 1:
            param.requires_grad = any(part in name for part in CROSS_ATTENTION_PARTS)
        elif stage == 2:
            param.requires_grad = name.startswith("decoder.") or any(part in name for part in CROSS_ATTENTION_PARTS)
        else:
            param.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
