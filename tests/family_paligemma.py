"""A tiny random PaliGemma (2, or 1 with ``gemma=1``) saved as a hub checkpoint is: a SigLIP vision tower, a
Gemma 2 (or Gemma) decoder, a Gemma BPE tokenizer trained here with the ``<image>``, location and segmentation
tokens its processor adds, and the processor itself; and what the checkpoint's own processor and generate write."""

from pathlib import Path

import torch
from PIL import Image

from conftest import SENTENCES, WORDS

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0-4, as in Gemma's own vocabulary
IMAGE_SIZE, PATCH = 32, 8  # 16 image tokens
SMALL = dict(hidden_size=32, intermediate_size=37, num_attention_heads=2)


def gemma_tokenizer():
    """Gemma's tokenizer (BPE with byte fallback, spaces as "▁") over merges learnt here from a few captions and
    PaliGemma's "caption xx" prompts, so words and language codes are whole tokens."""
    from tokenizers import pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    from captioner.models.paligemma import LANGUAGES

    corpus = SENTENCES * 5 + [" ".join(WORDS)] * 5 + [f"caption {lang}\n" for lang in LANGUAGES] * 5
    core = GemmaTokenizer().backend_tokenizer
    gemma = core.pre_tokenizer
    # Learnt within words, as SentencePiece learns Gemma's: each piece starts at a "▁", a newline stands alone.
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", "merged_with_next"),
                                                  pre_tokenizers.Split("\n", "isolated")])
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=GEMMA_SPECIALS,
                                                         show_progress=False))
    core.pre_tokenizer = gemma
    return GemmaTokenizer(tokenizer_object=core)


def paligemma_processor(size: int = IMAGE_SIZE):
    """What google/paligemma2-3b-mix-224 ships, at ``size`` px: SigLIP's processor (a bicubic resize to a square,
    mean and std 0.5) and the PaliGemma processor, which adds ``<image>`` and 1152 location and segment tokens."""
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    images = SiglipImageProcessorPil(size={"height": size, "width": size}, resample=Image.Resampling.BICUBIC,
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                     image_seq_length=(size // PATCH) ** 2)
    return PaliGemmaProcessor(image_processor=images, tokenizer=gemma_tokenizer())


def build_tiny_paligemma(path: Path, gemma: int = 2) -> Path:
    """PaliGemma 2 (a Gemma 2 decoder, one sliding-window layer whose 8-token window the 16 image tokens overrun,
    then a global one), or PaliGemma 1 with ``gemma=1``."""
    from transformers import (Gemma2Config, GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                              SiglipVisionConfig)

    processor = paligemma_processor()
    tokenizer = processor.tokenizer
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    text = dict(vocab_size=len(tokenizer), num_hidden_layers=2, num_key_value_heads=1, head_dim=16,
                max_position_embeddings=128, **ids, **SMALL)
    text = Gemma2Config(sliding_window=8, **text) if gemma == 2 else GemmaConfig(**text)
    vision = SiglipVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, num_hidden_layers=1, **SMALL)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
                             vocab_size=len(tokenizer), projection_dim=SMALL["hidden_size"],
                             hidden_size=SMALL["hidden_size"], tie_word_embeddings=False, **ids)
    torch.manual_seed(14 + gemma)
    model = PaliGemmaForConditionalGeneration(config)
    for key, value in ids.items():
        setattr(model.generation_config, key, value)
    words = [i for i in tokenizer.get_vocab().values() if len(GEMMA_SPECIALS) <= i < tokenizer.vocab_size]  # learnt
    with torch.no_grad():  # keep random captions to words (and the end): no special, location or segment token wins
        keep = torch.zeros(len(tokenizer), dtype=torch.bool)
        keep[words + [tokenizer.eos_token_id]] = True
        model.lm_head.weight[~keep] = 0.0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@torch.inference_mode()
def reference_paligemma(path: Path, images: list[Path], lang: str, style: str, max_new_tokens: int) -> list[str]:
    """What the checkpoint's own processor and ``generate`` write for ``caption {lang}``, greedy, fp32, one batch."""
    from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

    assert style == "short", "mix checkpoints caption with one task, 'caption {lang}'"
    processor = AutoProcessor.from_pretrained(path)
    prompt = f"{processor.image_token}caption {lang}"
    inputs = processor(text=[prompt] * len(images), images=[Image.open(p).convert("RGB") for p in images],
                       return_tensors="pt")
    model = PaliGemmaForConditionalGeneration.from_pretrained(path).eval()
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    captions = out[:, inputs.input_ids.shape[1]:]  # after the prefix
    return [t.strip() for t in processor.batch_decode(captions, skip_special_tokens=True)]
