"""SmolVLM and Idefics3: one tile per image, prompts through the checkpoint's chat template, and captions token for
token what the checkpoint's own processor and ``generate`` write, in every style and more than one language."""

import json
import shutil

import numpy as np
import pytest
import torch

from captioner.config import CAPTION_STYLES, GenerationConfig, ModelConfig
from captioner.models import generate, loading
from captioner.models.chat import LANGUAGE_NAMES
from conftest import decode_at, normalised
from families import odd_images
from family_smolvlm import IMAGE_TOKENS, KINDS, build_tiny_smolvlm, reference_pixels, reference_smolvlm

CLASSES = {"idefics3": "Idefics3ForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration"}
LANGS = ("en", "fr")


@pytest.fixture(scope="module", params=KINDS)
def checkpoint(request, tmp_path_factory):
    return request.param, build_tiny_smolvlm(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("png"), n=4)


def _pixels(captioner, images) -> np.ndarray:
    return np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])  # (B, H, W, 3)


def test_loads_into_its_own_class_and_asks_for_every_language_by_name(checkpoint):
    kind, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    assert type(captioner.model).__name__ == CLASSES[kind]
    assert captioner.info.family.styles == CAPTION_STYLES and captioner.info.family.takes_prompt
    assert set(captioner.info.languages) == set(LANGUAGE_NAMES)
    en, fr = (captioner.info.languages[lang] for lang in LANGS)
    assert en != fr
    assert "French" in captioner.tokenizer.decode(fr) and "English" in captioner.tokenizer.decode(en)


def test_each_prompt_holds_one_tile_of_image_tokens(checkpoint):
    """Splitting is off for prompts too: the global image's tokens only, never a tile grid."""
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    tokens = captioner.tokenizer.convert_ids_to_tokens(list(captioner.info.languages["en"]))
    start = tokens.index("<fake_token_around_image>")
    assert tokens[start:start + IMAGE_TOKENS + 3] == (
        ["<fake_token_around_image>", "<global-img>"] + ["<image>"] * IMAGE_TOKENS + ["<fake_token_around_image>"])
    assert tokens.count("<image>") == IMAGE_TOKENS and not any(t.startswith("<row_") for t in tokens)
    assert tokens[-1] == ":" and captioner.tokenizer.decode(captioner.info.languages["en"]).endswith("Assistant:")


def test_pixels_on_the_device_match_the_processors_one_tile(checkpoint, images):
    """The long side resized, then stretched to the square tile: decoded once to uint8, normalised on the device."""
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    ours = normalised(captioner, _pixels(captioner, images))  # (B, 3, 32, 32)
    theirs = reference_pixels(path, images)
    print(f"largest pixel difference from the processor: {(ours - theirs).abs().max().item():.3g}")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", CAPTION_STYLES)
def test_captions_are_what_the_models_own_processor_and_generate_write(checkpoint, images, style):
    """Greedy, fp32, in each style and two languages: token for token the model's own generate."""
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path), caption_style=style))
    pixels = _pixels(captioner, images)
    out = generate.caption(captioner, pixels, [list(LANGS)] * len(images), GenerationConfig(max_new_tokens=8))
    for lang in LANGS:
        assert [r[lang].text for r in out] == reference_smolvlm(path, images, lang, style, 8), lang
        assert all(r[lang].text and np.isfinite(r[lang].score) for r in out)


def test_a_batch_captions_as_its_images_one_by_one(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
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
    captioner = loading.load(ModelConfig(name=str(path)))
    out = generate.caption(captioner, _pixels(captioner, images), [list(LANGS)] * len(images),
                           GenerationConfig(max_new_tokens=6, num_beams=2))
    assert all(np.isfinite(r[lang].score) and r[lang].score <= 0 for r in out for lang in LANGS)


def test_the_teacher_forced_pass_gives_generates_own_next_token_logits(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    family, model = captioner.info.family, captioner.model
    with torch.inference_mode():
        encoded = family.encode(model, normalised(captioner, _pixels(captioner, images)))  # (B, N, D)
        prompt = torch.tensor([captioner.info.languages["fr"]] * len(images))  # (B, P)
        out = family.generate(model, encoded, prompt, max_new_tokens=5, return_dict_in_generate=True,
                              output_logits=True)
        forced = family.logits(model, encoded, out.sequences, prompt.shape[1])[:, prompt.shape[1] - 1:]  # (B, 5, V)
    torch.testing.assert_close(forced, torch.stack(out.logits, dim=1), atol=1e-4, rtol=1e-4)


def test_fast_generation_writes_the_same_tokens_on_the_plain_path(checkpoint, images):
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    pixels = _pixels(captioner, images)
    fast, plain = (generate.caption(captioner, pixels, [list(LANGS)] * len(images),
                                    GenerationConfig(max_new_tokens=8, fast=setting)) for setting in ("on", "off"))
    assert [{k: v.text for k, v in r.items()} for r in fast] == [{k: v.text for k, v in r.items()} for r in plain]
    assert captioner.info.family.static_cache(captioner.model, 64, None) is None


def test_a_prompt_instructs_it_in_each_language(checkpoint):
    _, path = checkpoint
    info = loading.describe(ModelConfig(name=str(path), prompt="List the shapes, in {language}."))
    tokenizer = loading.load_tokenizer(ModelConfig(name=str(path)))
    assert "List the shapes, in German." in tokenizer.decode(info.languages["de"])


def test_what_it_cannot_follow_is_refused_by_name(checkpoint, tmp_path):
    _, path = checkpoint
    with pytest.raises(loading.ModelError, match="leave out --image-size"):
        loading.describe(ModelConfig(name=str(path), image_size=(64, 64)))
    broken = shutil.copytree(path, tmp_path / "broken")
    saved = json.loads((broken / "processor_config.json").read_text())
    saved["image_processor"]["max_image_size"] = {"longest_edge": 16}
    (broken / "processor_config.json").write_text(json.dumps(saved))
    with pytest.raises(loading.ModelError, match="tiles of 16 px, its vision tower takes 32 px"):
        loading.describe(ModelConfig(name=str(broken)))
