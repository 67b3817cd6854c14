"""The full-size Florence-2-base captioner that gpu_generate.py measures, with random weights, built from configs (no
download). Imports only torch, transformers and tokenizers, so it runs on a GPU machine without Ray.

florence-community/Florence-2-base: a DaViT vision tower (4 stages 128/256/512/1024 wide, 1/1/9/1 blocks, 4/8/16/32
heads and groups, 12 x 12 windows) and a projection to 768, then BART-base (6 encoder and 6 decoder layers, 768 wide,
12 heads, 3072 feed-forward). Its 768 x 768 images give 24 x 24 patches plus one pooled token: 577 image tokens. The
vocabulary is BART's 51289 tokens (with Florence-2's location and task tokens) and ``<image>``, id 51289, padded to
51328 (a multiple of 64) as the converted checkpoint is.
"""

from pathlib import Path

import torch

IMAGE = 768  # px, square
VOCAB = 51328  # 51289 tokens, <image> at 51289, padded to a multiple of 64
IMAGE_TOKEN = 51289
BOS, PAD, EOS = 0, 1, 2  # BART's <s>, <pad>, </s>
PATCHES = dict(patch_size=[7, 3, 3, 3], patch_stride=[4, 2, 2, 2], patch_padding=[3, 1, 1, 1],
               patch_prenorm=[False, True, True, True])  # each stage's conv embedding: 32x down in all
VISION = dict(PATCHES, depths=[1, 1, 9, 1], embed_dim=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
              num_groups=[4, 8, 16, 32], window_size=12, projection_dim=768)
TEXT = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12, decoder_attention_heads=12,
            encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024)
# --small: the same shapes of graph at a fraction of the width and depth, for a check on a CPU
SMALL_VISION = dict(PATCHES, depths=[1, 1, 1, 1], embed_dim=[16, 32, 48, 64], num_heads=[1, 2, 3, 4],
                    num_groups=[1, 2, 3, 4], window_size=12, projection_dim=64)
SMALL_TEXT = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                  encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=1024)
SMALL_IMAGE = 128  # px: 4 x 4 patches, 17 image tokens


def florence2_base(folder: Path, small: bool = False) -> Path:
    """The Florence-2-base architecture with random weights (``small``: scaled down), saved once as safetensors with a
    word-level tokenizer of as many tokens and Florence-2's processor."""
    if (folder / "model.safetensors").exists():
        return folder
    from PIL import Image
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, PreTrainedTokenizerFast)

    # Every id decodes to a word; the task phrases' words are unknown, one token each, about as many as BART's.
    words = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, IMAGE_TOKEN)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    assert tokenizer.image_token_id == IMAGE_TOKEN
    size = SMALL_IMAGE if small else IMAGE
    text = dict(SMALL_TEXT if small else TEXT, vocab_size=VOCAB, bos_token_id=BOS, pad_token_id=PAD,
                eos_token_id=EOS, decoder_start_token_id=EOS)
    config = Florence2Config(text_config=text, vision_config=SMALL_VISION if small else VISION,
                             image_token_id=IMAGE_TOKEN)
    torch.manual_seed(0)
    net = Florence2ForConditionalGeneration(config)
    net.generation_config.forced_bos_token_id, net.generation_config.forced_eos_token_id = BOS, EOS
    tmp = folder.with_name(folder.name + ".tmp")
    net.save_pretrained(tmp)
    images = CLIPImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False,
                                   resample=Image.Resampling.BICUBIC, image_mean=[0.485, 0.456, 0.406],
                                   image_std=[0.229, 0.224, 0.225], image_seq_length=(size // 32) ** 2 + 1)
    Florence2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(tmp)
    tmp.rename(folder)
    return folder
