"""Tiny random checkpoints of every captioner family, built from configs and saved as a hub checkpoint is, with
each family's own image processor, and what the model itself writes for an image (the reference captions)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import SENTENCES, WORDS, build_tiny_model

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
CLIP_MEAN, CLIP_STD = [0.4815, 0.4578, 0.4082], [0.2686, 0.2613, 0.2758]
SMALL = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
VISION = dict(image_size=32, patch_size=8, **SMALL)


def _bert_tokenizer():
    """A word-level tokenizer with BERT's special tokens, as GIT and BLIP checkpoints carry."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(BERT_SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", bos_token="[DEC]")


def clip_processor(short_side: int = 37):
    """Short side to 37 px, then a 32 px centre crop, bicubic: the resize rule of CLIP, GIT and VideoMAE."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": short_side}, crop_size={"height": 32, "width": 32},
                                 resample=Image.Resampling.BICUBIC, image_mean=CLIP_MEAN, image_std=CLIP_STD)


def mbart50_tokenizer():
    """An mBART-50 tokenizer over a SentencePiece-style unigram vocabulary trained here on a few sentences; its
    52 language codes and <mask> follow the pieces, as in facebook/mbart-large-50."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import MBart50Tokenizer

    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(SENTENCES * 5 + [" ".join(WORDS)], trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>", show_progress=False))
    return MBart50Tokenizer(vocab=[tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]])


def first_code_id(tokenizer) -> int:
    """Where the language codes start: ids from there on are codes and <mask>, never words."""
    return min(tokenizer.lang_code_to_id.values())


def build_tiny_git(path: Path, frames: int | None = None) -> Path:
    """GIT; with ``frames``, a video GIT (as git-base-vatex) that captions a clip from that many frames."""
    from transformers import GitConfig, GitForCausalLM

    tokenizer = _bert_tokenizer()
    torch.manual_seed(11)
    config = GitConfig(vision_config=VISION, vocab_size=len(tokenizer), max_position_embeddings=128,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                       pad_token_id=tokenizer.pad_token_id, num_image_with_embedding=frames, **SMALL)
    GitForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    clip_processor().save_pretrained(path)
    return path


def build_tiny_blip(path: Path) -> Path:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    tokenizer = _bert_tokenizer()
    torch.manual_seed(12)
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
                pad_token_id=tokenizer.pad_token_id, **SMALL)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=VISION)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    BlipImageProcessorPil(size={"height": 32, "width": 32}, resample=Image.Resampling.BICUBIC,
                          image_mean=CLIP_MEAN, image_std=CLIP_STD).save_pretrained(path)
    return path


def build_tiny_clip_mbart(path: Path) -> Path:
    """A CLIP vision encoder feeding an mBART-50 decoder of another width (so a projection joins them), with an
    mBART-50 tokenizer whose unigram vocabulary is made here, started from the language code as the original
    CLIP-Vision-mBART50 was trained."""
    from transformers import CLIPVisionConfig, MBartConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    tokenizer = mbart50_tokenizer()
    start = tokenizer.lang_code_to_id["en_XX"]
    torch.manual_seed(13)
    decoder = MBartConfig(vocab_size=len(tokenizer), d_model=24, decoder_layers=1, decoder_attention_heads=2,
                          decoder_ffn_dim=37, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=37,
                          max_position_embeddings=64, is_decoder=True, add_cross_attention=True,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                          bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=start)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(CLIPVisionConfig(**VISION), decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = (
        start, tokenizer.pad_token_id, tokenizer.eos_token_id)
    model = VisionEncoderDecoderModel(config)
    model.generation_config.decoder_start_token_id = start
    with torch.no_grad():  # keep random captions to words: the language codes and <mask> never win
        model.decoder.lm_head.weight[first_code_id(tokenizer):] = 0.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    clip_processor(short_side=33).save_pretrained(path)
    return path


def build_pickled_vit_gpt2(path: Path) -> Path:
    """ViT-GPT2 saved with only pytorch_model.bin, as nlpconnect/vit-gpt2-image-captioning is on the hub."""
    from safetensors.torch import load_file

    build_tiny_model(path)
    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return path


BUILDERS = {"git": build_tiny_git, "blip": build_tiny_blip, "clip-mbart50": build_tiny_clip_mbart,
            "vit-gpt2-pickle": build_pickled_vit_gpt2}
# Languages the tests caption in: three of mBART-50's codes by ISO code; the others write one language.
LANGUAGES = {"git": ("en",), "blip": ("en",), "clip-mbart50": ("en", "fr", "de"), "vit-gpt2-pickle": ("en",)}


def odd_images(folder: Path, n: int = 3) -> list[Path]:
    """PNGs of odd sizes, so resize and crop arithmetic shows; lossless, so decoders agree to the bit."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate([(45, 37), (33, 70), (64, 48), (91, 53)][:n]):
        rng = np.random.default_rng(100 + i)
        path = folder / f"odd{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@torch.inference_mode()
def reference_captions(path: Path, images: list[Path], lang: str, max_new_tokens: int) -> list[str]:
    """What the checkpoint's own image processor and ``model.generate`` write, greedy, fp32."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    pixels = AutoImageProcessor.from_pretrained(path)(images=[Image.open(p).convert("RGB") for p in images],
                                                      return_tensors="pt").pixel_values
    kwargs = {}
    if config.model_type == "git":
        from transformers import GitForCausalLM as cls
    elif config.model_type == "blip":
        from transformers import BlipForConditionalGeneration as cls
    else:
        from transformers import VisionEncoderDecoderModel as cls
        codes = getattr(tokenizer, "lang_code_to_id", None)
        if codes:
            kwargs["decoder_start_token_id"] = next(i for c, i in codes.items() if c.startswith(f"{lang}_"))
    model = cls.from_pretrained(path).eval()
    out = model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
