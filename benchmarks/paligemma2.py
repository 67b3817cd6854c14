"""The PaliGemma 2 3B architecture at 224 px (google/paligemma2-3b-mix-224) that gpu_generate.py measures, with random
weights, built from configs (no download); ``small`` keeps its kinds of layers and its 256 image tokens at a few
layers and widths, a check on a CPU. Imports only torch, transformers and tokenizers, so it runs without Ray."""

from pathlib import Path

import torch
from PIL import Image

# SigLIP So400m/14 at 224 px: 16 x 16 patches, the 256 image tokens of every 224 px PaliGemma.
VISION = dict(image_size=224, patch_size=14, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
              num_attention_heads=16)
# Gemma 2 2B: sliding-window and global layers in turn, softcapped logits; Gemma's 256000 tokens, then <image> and
# PaliGemma's 1024 location and 128 segment tokens, the embedding padded to 257216 rows as the checkpoint's is.
TEXT = dict(vocab_size=257216, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
            num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, sliding_window=4096)
SMALL_VISION = dict(VISION, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SMALL_TEXT = dict(TEXT, vocab_size=3200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0 to 3
EXTRA = 1 + 1024 + 128  # <image>, then the location and segment tokens the PaliGemma processor adds
PADDING = 63  # embedding rows past the last token


def paligemma2(folder: Path, small: bool = False) -> Path:
    """The architecture with random weights (bf16), its SigLIP image processor and a word-level tokenizer whose
    every id decodes to a word, saved once as safetensors with the PaliGemma processor."""
    if (folder / "model.safetensors.index.json").exists() or (folder / "model.safetensors").exists():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (AutoModelForImageTextToText, Gemma2Config, PaliGemmaConfig, PaliGemmaProcessor,
                              PreTrainedTokenizerFast, SiglipImageProcessorPil, SiglipVisionConfig)

    vision, text = (SMALL_VISION, SMALL_TEXT) if small else (VISION, TEXT)
    words = SPECIALS + [f"w{i}" for i in range(len(SPECIALS), text["vocab_size"] - EXTRA - PADDING)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    images = SiglipImageProcessorPil(size={"height": vision["image_size"], "width": vision["image_size"]},
                                     resample=Image.Resampling.BICUBIC, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                     image_seq_length=patches)
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)  # adds <image> and the 1152
    ids = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    config = PaliGemmaConfig(vision_config=SiglipVisionConfig(**vision), text_config=Gemma2Config(**text, **ids),
                             image_token_index=processor.image_token_id, vocab_size=text["vocab_size"],
                             projection_dim=text["hidden_size"], hidden_size=text["hidden_size"], **ids)
    torch.manual_seed(0)
    net = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    for key, value in ids.items():
        setattr(net.generation_config, key, value)
    tmp = folder.with_name(folder.name + ".tmp")
    net.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    tmp.rename(folder)
    return folder
