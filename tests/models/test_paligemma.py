"""PaliGemma 2 (and 1) against the checkpoint's own processor and ``generate``: pixels, prompts in every language it
writes, the vision tower once per image, beam scores, batching, the fast path, and what it refuses."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import generate, loading
from captioner.models.paligemma import LANGUAGES, PaliGemma
from conftest import decode_at, normalised
from families import odd_images
from family_paligemma import build_tiny_paligemma, reference_paligemma


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_paligemma(tmp_path_factory.mktemp("paligemma2"))


@pytest.fixture(scope="module")
def checkpoint1(tmp_path_factory):
    return build_tiny_paligemma(tmp_path_factory.mktemp("paligemma1"), gemma=1)


@pytest.fixture(scope="module")
def captioner(checkpoint):
    return loading.load(ModelConfig(name=str(checkpoint)))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("png"), n=4)


def _pixels(captioner, images) -> np.ndarray:
    return np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])


def test_it_loads_into_its_own_class_and_writes_the_mix_checkpoints_languages_in_one_style(captioner):
    assert type(captioner.model).__name__ == "PaliGemmaForConditionalGeneration"
    assert isinstance(captioner.info.family, PaliGemma)
    assert tuple(captioner.info.languages) == LANGUAGES and len(LANGUAGES) == 35
    assert PaliGemma.styles == ("short",)


def test_each_prompt_is_the_processors_own_caption_task(checkpoint, captioner):
    """Image tokens, BOS, "caption xx", newline: exactly the ids the checkpoint's processor gives."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    blank = Image.new("RGB", (32, 32))
    for lang in ("en", "fil", "zh"):
        ids = processor(text=[f"<image>caption {lang}"], images=[blank]).input_ids[0]
        assert captioner.info.languages[lang] == tuple(ids)
        text = processor.tokenizer.decode(ids[16:])
        assert ids[:16] == [processor.image_token_id] * 16 and text == f"<bos>caption {lang}\n"


def test_pixels_on_the_device_match_the_image_processor(checkpoint, captioner, images):
    """Decode resizes once to uint8 on the CPU (bicubic to a square), the device normalises (mean and std 0.5)."""
    ours = normalised(captioner, _pixels(captioner, images))
    theirs = AutoImageProcessor.from_pretrained(checkpoint)(images=[Image.open(p).convert("RGB") for p in images],
                                                            return_tensors="pt").pixel_values
    print(f"largest pixel difference from the processor: {(ours - theirs).abs().max().item():.3g}")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_captions_in_every_language_are_what_its_own_generate_writes(checkpoint, captioner, images):
    """Greedy, fp32, every style and language it writes: token for token the processor's prompt and generate."""
    pixels = _pixels(captioner, images)
    for style in PaliGemma.styles:
        ours = generate.caption(captioner, pixels, [LANGUAGES] * len(images), GenerationConfig(max_new_tokens=8))
        for lang in LANGUAGES:
            assert [r[lang].text for r in ours] == reference_paligemma(checkpoint, images, lang, style, 8), lang
            assert all(np.isfinite(r[lang].score) and r[lang].score <= 0 for r in ours)


def test_paligemma_1_captions_as_its_own_generate_does(checkpoint1, images):
    captioner = loading.load(ModelConfig(name=str(checkpoint1)))
    assert captioner.model.config.text_config.model_type == "gemma"
    ours = generate.caption(captioner, _pixels(captioner, images), [["en", "de"]] * len(images),
                            GenerationConfig(max_new_tokens=8))
    for lang in ("en", "de"):
        assert [r[lang].text for r in ours] == reference_paligemma(checkpoint1, images, lang, "short", 8), lang


def test_the_vision_tower_runs_once_per_image_whatever_the_languages(captioner, images, monkeypatch):
    calls = []
    tower = captioner.model.model.vision_tower
    monkeypatch.setattr(tower, "forward", lambda *a, _forward=tower.forward, **k: calls.append(1) or _forward(*a, **k))
    generate.caption(captioner, _pixels(captioner, images), [("en", "fr", "sw")] * len(images),
                     GenerationConfig(max_new_tokens=4, num_beams=2))
    assert len(calls) == 1


def test_teacher_forced_logits_are_the_ones_generate_steps_on(captioner, images):
    """Beam search is scored by ``logits``: the prompt attended both ways, the caption causally, as generate does."""
    family, model = captioner.info.family, captioner.model
    encoded = family.encode(model, normalised(captioner, _pixels(captioner, images)))
    prompt = torch.tensor([captioner.info.languages["fr"]] * len(images))  # (B, P)
    with torch.inference_mode():
        out = family.generate(model, encoded, prompt, max_new_tokens=6, do_sample=False, num_beams=1,
                              return_dict_in_generate=True, output_logits=True)
        forced = family.logits(model, encoded, out.sequences, prompt.shape[1])  # (B, L-1, V)
    steps = torch.stack(out.logits, dim=1)  # (B, T, V)
    torch.testing.assert_close(forced[:, prompt.shape[1] - 1:], steps, atol=1e-5, rtol=0)


def test_a_batch_captions_each_image_as_it_would_alone(captioner, images):
    pixels = _pixels(captioner, images)
    settings = GenerationConfig(max_new_tokens=8)
    batch = generate.caption(captioner, pixels, [["en", "ja"]] * len(images), settings)
    for i in range(len(images)):
        alone = generate.caption(captioner, pixels[i:i + 1], [["en", "ja"]], settings)[0]
        for lang in ("en", "ja"):
            assert alone[lang].text == batch[i][lang].text
            assert alone[lang].score == pytest.approx(batch[i][lang].score, abs=1e-5)


def test_beam_search_scores_are_finite_log_probabilities(captioner, images):
    out = generate.caption(captioner, _pixels(captioner, images), [["en", "fr"]] * len(images),
                           GenerationConfig(max_new_tokens=6, num_beams=3))
    assert all(np.isfinite(r[lang].score) and r[lang].score <= 0 for r in out for lang in ("en", "fr"))


@pytest.mark.parametrize("gemma", [2, 1])
def test_fast_generation_writes_the_same_tokens(checkpoint, checkpoint1, images, gemma):
    """PaliGemma 1 on a static cache (three images padded to a bucket of four); PaliGemma 2 on the plain path."""
    captioner = loading.load(ModelConfig(name=str(checkpoint if gemma == 2 else checkpoint1)))
    pixels = _pixels(captioner, images[:3])
    off, on = (generate.caption(captioner, pixels, [["en", "pt"]] * 3, GenerationConfig(max_new_tokens=8, fast=fast))
               for fast in ("off", "on"))
    assert [{k: c.text for k, c in r.items()} for r in on] == [{k: c.text for k, c in r.items()} for r in off]
    caches = list(captioner.caches.values())
    assert caches and all((cache is None) == (gemma == 2) for cache in caches)


@pytest.mark.parametrize("setting, flag", [(dict(caption_style="detailed"), "--caption-style detailed"),
                                           (dict(caption_style="paragraph"), "--caption-style paragraph"),
                                           (dict(prompt="Describe it in {language}."), "--prompt"),
                                           (dict(image_size=(448, 448)), "--image-size")])
def test_what_it_cannot_take_is_refused_by_name(checkpoint, setting, flag):
    with pytest.raises(loading.ModelError, match=re.escape(flag)) as refused:
        loading.describe(ModelConfig(name=str(checkpoint), **setting))
    assert "PaliGemma" in str(refused.value)
