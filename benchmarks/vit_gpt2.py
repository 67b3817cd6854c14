"""The full-size ViT-GPT2 captioner that bench.py and gpu_generate.py measure, with random weights, built from
configs (no download). Imports only torch, transformers and tokenizers, so it runs on a GPU machine without Ray."""

from pathlib import Path

import torch

EOT = 50256  # GPT-2's <|endoftext|>: start, end and padding token of the nlpconnect checkpoint


def vit_gpt2(folder: Path) -> Path:
    """The nlpconnect/vit-gpt2-image-captioning architecture with random weights, saved once as safetensors."""
    if (folder / "model.safetensors").exists():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (GPT2Config, PreTrainedTokenizerFast, ViTConfig, ViTImageProcessorPil,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)

    words = [f"w{i}" for i in range(EOT)] + ["<|endoftext|>"]  # every id decodes to a word
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    encoder = ViTConfig(image_size=224, patch_size=16)  # ViT-B/16: 12 layers, 768 wide, 12 heads
    decoder = GPT2Config(vocab_size=EOT + 1, add_cross_attention=True, is_decoder=True, bos_token_id=EOT,
                         eos_token_id=EOT)  # GPT-2 small: 12 layers, 768 wide, 1024 positions
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = config.pad_token_id = config.eos_token_id = EOT
    torch.manual_seed(0)
    net = VisionEncoderDecoderModel(config=config)
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
        setattr(net.generation_config, key, EOT)
    tmp = folder.with_name(folder.name + ".tmp")
    net.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    processor = ViTImageProcessorPil(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(tmp)
    tmp.rename(folder)
    return folder
