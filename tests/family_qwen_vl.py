"""Tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints, built from configs and saved as hub checkpoints are
(a byte-level BPE tokenizer trained here, the image processor, the chat template), and what each writes through
its own processor and ``generate`` (the reference captions).

Their processor classes cannot be built without torchvision in transformers 5 (their video half); the reference
builds one with no video processor, past that type check only, so what it writes is the processor's own
``__call__`` and chat template."""

from pathlib import Path
from unittest import mock

import torch
from PIL import Image

from captioner.models.chat import INSTRUCTIONS, LANGUAGE_NAMES
from conftest import SENTENCES, WORDS

KINDS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PATCH = {"qwen2_vl": 8, "qwen2_5_vl": 8, "qwen3_vl": 16}  # Qwen3-VL's tower takes 16 px patches, the others 14
MERGE = 2
SIZE = (96, 64)  # (width, height) of a run's images: a whole number of merged patches for each kind
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
# Their chat template, in its style: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>text<|im_end|>\n".
TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
            "{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SMALL = dict(hidden_size=32, intermediate_size=37, num_heads=2)


def _tokenizer():
    """A byte-level BPE (as Qwen's) trained on the captions' words and every instruction in every language."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (SENTENCES + [" ".join(WORDS)]) * 50 + [text.replace("{language}", name) for text in INSTRUCTIONS.values()
                                              for name in LANGUAGE_NAMES.values()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=480, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", extra_special_tokens=SPECIALS[1:])


def _config(kind: str, tokenizer):
    import transformers

    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("vision_start", "<|vision_start|>"), ("vision_end", "<|vision_end|>"), ("image", "<|image_pad|>"),
        ("video", "<|video_pad|>")]}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}  # 16-wide heads: 8 pairs
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, rope_parameters=rope,
                bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    tower = dict(depth=2, patch_size=PATCH[kind], spatial_merge_size=MERGE)
    if kind == "qwen2_vl":
        return transformers.Qwen2VLConfig(text_config=text, vision_config=dict(
            tower, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2), **ids)
    if kind == "qwen2_5_vl":  # windowed attention in the first block, full in the second, as the real towers mix
        return transformers.Qwen2_5_VLConfig(text_config=text, vision_config=dict(
            tower, **SMALL, out_hidden_size=32, window_size=4 * PATCH[kind], fullatt_block_indexes=[1]), **ids)
    rope["mrope_interleaved"] = True
    return transformers.Qwen3VLConfig(text_config=dict(text, head_dim=16), vision_config=dict(
        tower, **SMALL, out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0]), **ids)


def build_tiny_qwen(path: Path, kind: str = "qwen2_5_vl") -> Path:
    """A patch-grid vision tower (merged 2 x 2) and a chat decoder with 3D rope, 32 wide, of ``kind``; its image
    processor keeps each image's pixels between 4 and 64 merged patches, as the hub's keep theirs in limits."""
    import transformers

    tokenizer = _tokenizer()
    torch.manual_seed(23)
    config = _config(kind, tokenizer)
    model = {"qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
             "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
             "qwen3_vl": transformers.Qwen3VLForConditionalGeneration}[kind](config)
    model.generation_config.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    words = [i for token, i in tokenizer.get_vocab().items() if tokenizer.convert_tokens_to_string([token])
             in [f" {word}" for word in WORDS]]
    with torch.no_grad():  # captions of words that differ by image: only words score, and they score widely apart
        model.lm_head.weight.zero_()
        model.lm_head.weight[words] = torch.randn(len(words), 32)
    model.save_pretrained(path)
    grid = (PATCH[kind] * MERGE) ** 2
    transformers.Qwen2VLImageProcessorPil(patch_size=PATCH[kind], merge_size=MERGE,
                                          size={"shortest_edge": 4 * grid, "longest_edge": 64 * grid}
                                          ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "chat_template.jinja").write_text(TEMPLATE)
    return path


def processor(path: Path):
    """The checkpoint's own processor class, built from its saved parts with no video processor."""
    import transformers
    from transformers.processing_utils import ProcessorMixin

    kind = transformers.AutoConfig.from_pretrained(path).model_type
    cls = {"qwen2_vl": transformers.Qwen2VLProcessor, "qwen2_5_vl": transformers.Qwen2_5_VLProcessor,
           "qwen3_vl": transformers.Qwen3VLProcessor}[kind]
    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None):
        return cls(image_processor=transformers.AutoImageProcessor.from_pretrained(path),
                   tokenizer=transformers.AutoTokenizer.from_pretrained(path), video_processor=None,
                   chat_template=(path / "chat_template.jinja").read_text())


def at_size(images: list[Path]) -> list[Image.Image]:
    """Each image stretched to the run's size, as the decode stage stretches it (bicubic, the processor's)."""
    return [Image.open(p).convert("RGB").resize(SIZE, Image.Resampling.BICUBIC) for p in images]


@torch.inference_mode()
def reference_qwen(path: Path, images: list[Path], lang: str, style: str, max_new_tokens: int) -> list[str]:
    """What the checkpoint's own processor (its chat template, each image already at the run's size) and
    ``model.generate`` write for the style's instruction in ``lang``, greedy, fp32, the batch in one call."""
    import transformers

    own = processor(path)
    instruction = INSTRUCTIONS[style].replace("{language}", LANGUAGE_NAMES[lang])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = own.apply_chat_template(messages, add_generation_prompt=True)
    inputs = own(text=[text] * len(images), images=at_size(images), return_tensors="pt")
    model = transformers.AutoModelForImageTextToText.from_pretrained(path).eval()
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return [t.strip() for t in own.tokenizer.batch_decode(out[:, inputs.input_ids.shape[1]:], skip_special_tokens=True)]
