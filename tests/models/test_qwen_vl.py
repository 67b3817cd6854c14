"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: one run-wide size on the patch grid, prompts through the checkpoint's chat
template, and captions token for token what the checkpoint's own processor and ``generate`` write, in every style
and more than one language."""

import json
import shutil

import numpy as np
import pytest
import torch

from captioner.config import CAPTION_STYLES, GenerationConfig, ModelConfig
from captioner.models import generate, loading
from captioner.models.chat import LANGUAGE_NAMES
from captioner.models.qwen_vl import DEFAULT_SIDE, patches
from conftest import decode_at, normalised
from families import odd_images
from family_qwen_vl import KINDS, MERGE, PATCH, SIZE, at_size, build_tiny_qwen, processor, reference_qwen

CLASSES = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
           "qwen3_vl": "Qwen3VLForConditionalGeneration"}
LANGS = ("en", "fr")


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request, tmp_path_factory):
    return request.param, build_tiny_qwen(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("png"), n=4)


def _settings(path, **extra) -> ModelConfig:
    return ModelConfig(name=str(path), image_size=SIZE, **extra)


def _pixels(captioner, images) -> np.ndarray:
    return np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])  # (B, H, W, 3)


def test_loads_into_its_own_class_and_asks_for_every_language_by_name(checkpoint):
    kind, path = checkpoint
    captioner = loading.load(_settings(path))
    assert type(captioner.model).__name__ == CLASSES[kind]
    family = captioner.info.family
    assert family.styles == CAPTION_STYLES and family.takes_prompt and family.takes_image_size
    assert set(captioner.info.languages) == set(LANGUAGE_NAMES)
    en, fr = (captioner.tokenizer.decode(captioner.info.languages[lang]) for lang in LANGS)
    assert "in French." in fr and "in English." in en and fr.endswith("<|im_start|>assistant\n")


def test_prompts_are_the_processors_for_an_image_of_the_runs_size(checkpoint, images):
    """Its image tokens, their count and the template's special tokens, and which tokens are the image's."""
    kind, path = checkpoint
    captioner = loading.load(_settings(path, caption_style="detailed"))
    own = processor(path)
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "Describe this image in detail, in German."}]}]
    inputs = own(text=[own.apply_chat_template(messages, add_generation_prompt=True)], images=at_size(images[:1]))
    assert captioner.info.languages["de"] == tuple(inputs["input_ids"][0])
    tokens = SIZE[0] // PATCH[kind] * (SIZE[1] // PATCH[kind]) // MERGE**2
    assert list(inputs["mm_token_type_ids"][0]).count(1) == tokens


def test_pixels_on_the_device_are_the_processors_patches(checkpoint, images):
    """Decoded once to uint8 at the run's size, normalised and cut into the processor's patch order on the device:
    for an image of that size, exactly the processor's pixel values and grid."""
    kind, path = checkpoint
    captioner = loading.load(_settings(path))
    family, model = captioner.info.family, captioner.model
    flat, grid = patches(normalised(captioner, _pixels(captioner, images)), model.config.vision_config)
    theirs = processor(path).image_processor(images=at_size(images), return_tensors="pt")
    print(f"{kind}: largest pixel difference from the processor: "
          f"{(flat - theirs.pixel_values).abs().max().item():.3g}")
    torch.testing.assert_close(flat, theirs.pixel_values, atol=1e-5, rtol=0)
    assert grid.tolist() == theirs.image_grid_thw.tolist()
    assert family.encode(model, normalised(captioner, _pixels(captioner, images)))[0].shape[:2] == (
        len(images), SIZE[0] // PATCH[kind] * (SIZE[1] // PATCH[kind]) // MERGE**2)


def test_the_image_size_is_rounded_to_the_patch_grid_within_the_processors_limits(checkpoint):
    kind, path = checkpoint
    step = PATCH[kind] * MERGE
    resize = loading.describe(ModelConfig(name=str(path), image_size=(3 * step + 3, 2 * step - 2))).image.resize
    assert (resize.width, resize.height) == (3 * step, 2 * step)
    default = loading.describe(ModelConfig(name=str(path))).image.resize
    assert default.width == default.height and default.width * default.height <= 64 * step**2
    assert default.width <= DEFAULT_SIDE and default.width % step == 0
    tiny = loading.describe(ModelConfig(name=str(path), image_size=(step, step))).image.resize
    assert tiny.width * tiny.height >= 4 * step**2  # raised to the processor's least pixels


@pytest.mark.parametrize("style", CAPTION_STYLES)
def test_captions_are_what_the_models_own_processor_and_generate_write(checkpoint, images, style):
    """Greedy, fp32, in each style and two languages: token for token the model's own generate."""
    _, path = checkpoint
    captioner = loading.load(_settings(path, caption_style=style))
    pixels = _pixels(captioner, images)
    out = generate.caption(captioner, pixels, [list(LANGS)] * len(images), GenerationConfig(max_new_tokens=8))
    for lang in LANGS:
        assert [r[lang].text for r in out] == reference_qwen(path, images, lang, style, 8), lang
        assert all(r[lang].text and np.isfinite(r[lang].score) for r in out)


def test_a_batch_captions_as_its_images_one_by_one(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(_settings(path))
    pixels = _pixels(captioner, images)
    settings = GenerationConfig(max_new_tokens=8)
    batched = generate.caption(captioner, pixels, [list(LANGS)] * len(images), settings)
    for i in range(len(images)):
        alone = generate.caption(captioner, pixels[i:i + 1], [list(LANGS)], settings)[0]
        for lang in LANGS:
            assert alone[lang].text == batched[i][lang].text
            assert alone[lang].score == pytest.approx(batched[i][lang].score, abs=1e-5)


def test_beam_search_scores_by_a_teacher_forced_pass(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(_settings(path))
    out = generate.caption(captioner, _pixels(captioner, images), [list(LANGS)] * len(images),
                           GenerationConfig(max_new_tokens=6, num_beams=2))
    assert all(np.isfinite(r[lang].score) and r[lang].score <= 0 for r in out for lang in LANGS)


def test_the_teacher_forced_pass_gives_generates_own_next_token_logits(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(_settings(path))
    family, model = captioner.info.family, captioner.model
    with torch.inference_mode():
        encoded = family.encode(model, normalised(captioner, _pixels(captioner, images)))
        prompt = torch.tensor([captioner.info.languages["fr"]] * len(images))  # (B, P)
        out = family.generate(model, encoded, prompt, max_new_tokens=5, return_dict_in_generate=True,
                              output_logits=True)
        forced = family.logits(model, encoded, out.sequences, prompt.shape[1])[:, prompt.shape[1] - 1:]  # (B, 5, V)
    torch.testing.assert_close(forced, torch.stack(out.logits, dim=1), atol=1e-4, rtol=1e-4)


def test_fast_generation_writes_the_same_tokens_on_the_plain_path(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(_settings(path))
    pixels = _pixels(captioner, images)
    fast, plain = (generate.caption(captioner, pixels, [list(LANGS)] * len(images),
                                    GenerationConfig(max_new_tokens=8, fast=setting)) for setting in ("on", "off"))
    assert [{k: v.text for k, v in r.items()} for r in fast] == [{k: v.text for k, v in r.items()} for r in plain]
    assert captioner.info.family.static_cache(captioner.model, 64, None) is None


def test_a_prompt_instructs_it_in_each_language(checkpoint):
    _, path = checkpoint
    info = loading.describe(_settings(path, prompt="List the shapes, in {language}."))
    tokenizer = loading.load_tokenizer(ModelConfig(name=str(path)))
    assert "List the shapes, in German." in tokenizer.decode(info.languages["de"])


def test_a_checkpoint_it_cannot_follow_is_refused_by_name(checkpoint, tmp_path):
    kind, path = checkpoint
    broken = shutil.copytree(path, tmp_path / "broken")
    saved = json.loads((broken / "preprocessor_config.json").read_text())
    saved["patch_size"] = 2 * PATCH[kind]
    (broken / "preprocessor_config.json").write_text(json.dumps(saved))
    with pytest.raises(loading.ModelError, match=f"{2 * PATCH[kind]} px patches merged 2 x 2, its vision tower "
                                                 f"takes {PATCH[kind]} px"):
        loading.describe(ModelConfig(name=str(broken)))
    (broken / "chat_template.jinja").unlink()
    shutil.copy(path / "preprocessor_config.json", broken)
    with pytest.raises(loading.ModelError, match="no chat template"):
        loading.describe(ModelConfig(name=str(broken)))
