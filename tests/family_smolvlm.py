"""Tiny random Idefics3 and SmolVLM checkpoints, built from configs and saved as hub checkpoints are (a byte-level
BPE tokenizer trained here, the processor with its chat template), and what each writes through its own processor
and ``generate`` (the reference captions)."""

import json
from pathlib import Path

import torch
from PIL import Image

from captioner.models.chat import INSTRUCTIONS, LANGUAGE_NAMES
from conftest import SENTENCES, WORDS

TILE = 32  # px: the vision tower's image size, and the one tile each image becomes
PATCH = 8  # a 4 x 4 patch grid, which a scale factor of 2 shuffles into 4 image tokens
SCALE = 2
IMAGE_TOKENS = (TILE // PATCH) ** 2 // SCALE**2
# What the processor and template need: the image tokens and tile tags; then the turn's end and padding.
STRUCTURE = ["<fake_token_around_image>", "<image>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
END, PAD = "<end_of_utterance>", "<|endoftext|>"
# Both checkpoints' chat template, in their style: "User:<image>text<end_of_utterance>\nAssistant:".
TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}:"
            "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
            "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
            "{% if add_generation_prompt %}Assistant:{% endif %}")
BOS = {"idefics3": "<|begin_of_text|>", "smolvlm": "<|im_start|>"}  # as Llama 3's and SmolLM2's tokenizers start
KINDS = tuple(BOS)


def _tokenizer(bos: str):
    """A byte-level BPE (as SmolLM2's and Llama 3's) trained on the captions' words and every instruction in
    every language, so each language's prompt spells its own name; with every special token the processor uses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (SENTENCES + [" ".join(WORDS)]) * 50 + [text.replace("{language}", name) for text in INSTRUCTIONS.values()
                                              for name in LANGUAGE_NAMES.values()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=480, special_tokens=[PAD, bos, END, *STRUCTURE], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=END, pad_token=PAD,
                                   unk_token=PAD, extra_special_tokens=STRUCTURE)


def build_tiny_smolvlm(path: Path, kind: str = "smolvlm") -> Path:
    """A SigLIP-style vision tower (32 px, 8 px patches) and a Llama-style decoder, 32 wide, as a SmolVLM2
    checkpoint, or with ``kind`` "idefics3" as an Idefics3 one (SmolVLM-256M-Instruct's kind). Its image
    processor splits large images into tiles, as the hub's do, after resizing the long side to 64 px."""
    import transformers

    prefix = "Idefics3" if kind == "idefics3" else "SmolVLM"
    tokenizer = _tokenizer(BOS[kind])
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(21)
    config = getattr(transformers, f"{prefix}Config")(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=TILE, patch_size=PATCH),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128, **ids),
        scale_factor=SCALE, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
        **ids)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    model.generation_config.update(**ids)
    words = [i for token, i in tokenizer.get_vocab().items() if tokenizer.convert_tokens_to_string([token])
             in [f" {word}" for word in WORDS]]
    with torch.no_grad():  # captions of words that differ by image: only words score, and they score widely apart
        model.lm_head.weight.zero_()
        model.lm_head.weight[words] = torch.randn(len(words), config.text_config.hidden_size)
    model.save_pretrained(path)
    image_processor = getattr(transformers, f"{prefix}ImageProcessorPil")(
        size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE}, resample=Image.Resampling.LANCZOS,
        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    # SmolVLM's own processor cannot be built without torchvision (its video half): saved as Idefics3's, which
    # writes the same for images, under SmolVLM's name, as SmolVLM2 checkpoints name theirs.
    transformers.Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_TOKENS,
                                   chat_template=TEMPLATE).save_pretrained(path)
    saved = path / "processor_config.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "processor_class": f"{prefix}Processor"}))
    return path


def _processor(path: Path, kind: str):
    """The checkpoint's own processor, one tile per image; SmolVLM2's as its images load (``models/smolvlm.py``)."""
    from transformers import AutoProcessor, Idefics3Processor

    processor = (AutoProcessor if kind == "idefics3" else Idefics3Processor).from_pretrained(path)
    processor.image_processor.do_image_splitting = False
    return processor


def reference_pixels(path: Path, images: list[Path]) -> torch.Tensor:
    """(B, 3, H, W): the one tile of each image, as the checkpoint's own processor makes it."""
    kind = json.loads((path / "config.json").read_text())["model_type"]
    pixels = _processor(path, kind).image_processor(images=[[Image.open(p).convert("RGB")] for p in images],
                                                    return_tensors="pt").pixel_values  # (B, 1, 3, H, W)
    return pixels[:, 0]


@torch.inference_mode()
def reference_smolvlm(path: Path, images: list[Path], lang: str, style: str, max_new_tokens: int) -> list[str]:
    """What the checkpoint's own processor (its chat template, one tile per image) and ``model.generate`` write
    for the style's instruction in ``lang``, greedy, fp32, the batch in one call."""
    import transformers

    kind = json.loads((path / "config.json").read_text())["model_type"]
    processor = _processor(path, kind)
    instruction = INSTRUCTIONS[style].replace("{language}", LANGUAGE_NAMES[lang])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text] * len(images), images=[[Image.open(p).convert("RGB")] for p in images],
                       return_tensors="pt")
    loader = getattr(transformers, ("Idefics3" if kind == "idefics3" else "SmolVLM") + "ForConditionalGeneration")
    model = loader.from_pretrained(path).eval()
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    captions = out[:, inputs.input_ids.shape[1]:]
    return [t.strip() for t in processor.tokenizer.batch_decode(captions, skip_special_tokens=True)]
