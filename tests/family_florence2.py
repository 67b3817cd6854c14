"""A tiny random Florence-2 checkpoint, built from configs and saved as the hub's are (model, BART tokenizer,
Florence2Processor), and what the checkpoint's own processor and ``generate`` write for images (the reference)."""

import json
from pathlib import Path

import torch
from PIL import Image

from conftest import SENTENCES, WORDS

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # Florence-2's processor normalises so
# The task token of each caption style, as Florence-2's model card names them.
TASKS = {"short": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "paragraph": "<MORE_DETAILED_CAPTION>"}
SIZE = 32  # px: two DaViT stages (strides 4, 2) leave 4 x 4 patches, so 16 + 1 image tokens
IMAGE_TOKENS = (SIZE // 8) ** 2 + 1


def _bart_tokenizer():
    """A byte-level BPE trained here on a few sentences, as a BartTokenizer with BART's special tokens in BART's order
    (<s> 0, <pad> 1, </s> 2, <unk> 3) and the ``<image>`` token Florence2Processor fills with image features."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BartTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(SENTENCES * 5 + [" ".join(WORDS)], trainers.BpeTrainer(
        vocab_size=360, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    trained = json.loads(bpe.to_str())["model"]
    return BartTokenizer(vocab=trained["vocab"], merges=[tuple(pair) for pair in trained["merges"]],
                         extra_special_tokens={"image_token": "<image>"})


def _word_ids(tokenizer) -> list[int]:
    """The tokens that are one whole word of ``WORDS`` after a space."""
    ids = (tokenizer.encode(f" {w}", add_special_tokens=False) for w in WORDS)
    return sorted({i[0] for i in ids if len(i) == 1})


def build_tiny_florence2(path: Path) -> Path:
    """Florence-2 at 32 px: a two-stage DaViT (16 and 32 wide), its projector, and a one-layer BART 32 wide, with
    Florence-2's start tokens (decoder start </s>, then <s> forced, as its BART generation config does)."""
    from transformers import (CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor)

    tokenizer = _bart_tokenizer()
    text = dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
                bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2, init_std=0.3)
    vision = dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                  patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[1, 2], num_groups=[1, 2], window_size=2,
                  projection_dim=32, max_position_embeddings=8, initializer_range=0.3)
    torch.manual_seed(14)
    # Untied, unlike the hub's, so that keeping captions to words leaves the prompt's embeddings random
    model = Florence2ForConditionalGeneration(Florence2Config(text_config=text, vision_config=vision,
                                                              image_token_id=tokenizer.image_token_id,
                                                              tie_word_embeddings=False))
    model.generation_config.forced_bos_token_id = tokenizer.bos_token_id
    model.generation_config.forced_eos_token_id = tokenizer.eos_token_id
    with torch.no_grad():  # keep random captions to whole words: no other token's logit is ever above 0
        others = torch.ones(len(tokenizer), dtype=torch.bool)
        others[_word_ids(tokenizer)] = False
        model.lm_head.weight[others] = 0.0
    model.save_pretrained(path)
    images = CLIPImageProcessorPil(size={"height": SIZE, "width": SIZE}, do_center_crop=False,
                                   resample=Image.Resampling.BICUBIC, image_mean=IMAGENET_MEAN,
                                   image_std=IMAGENET_STD, image_seq_length=IMAGE_TOKENS)
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return path


@torch.inference_mode()
def reference_florence2(path: Path, images: list[Path], lang: str, style: str, max_new_tokens: int) -> list[str]:
    """What the checkpoint's own processor and ``generate`` write, greedy, fp32, one call for the batch. The <s> it
    writes first is one of generate's new tokens, not a caption token, so generate is given one more."""
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    assert lang == "en", "Florence-2 writes English only"
    processor = AutoProcessor.from_pretrained(path)
    model = Florence2ForConditionalGeneration.from_pretrained(path).eval()
    inputs = processor(text=[TASKS[style]] * len(images), images=[Image.open(p).convert("RGB") for p in images],
                       return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens + 1, do_sample=False, num_beams=1)
    return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]
