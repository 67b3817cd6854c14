"""Florence-2 on a tiny random checkpoint: its own class, English in three caption styles, the processor's pixels and
prompt ids, captions token for token what its own processor and generate write, the vision tower once per image,
teacher-forced logits equal to generate's, beam scores, refused settings, and the fast path's tokens."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, EncoderDecoderCache, Florence2ForConditionalGeneration

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import fast, generate, loading
from conftest import decode_at, normalised
from families import odd_images
from family_florence2 import TASKS, build_tiny_florence2, reference_florence2

STYLES = ("short", "detailed", "paragraph")


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return build_tiny_florence2(tmp_path_factory.mktemp("florence2"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("png"), n=4)


@pytest.fixture(scope="module")
def captioners(path):
    """One captioner per caption style."""
    return {style: loading.load(ModelConfig(name=str(path), caption_style=style)) for style in STYLES}


def decoded(captioner, images) -> np.ndarray:
    return np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])


def test_it_loads_into_its_own_class_and_writes_english_in_three_styles(captioners):
    for style, captioner in captioners.items():
        assert type(captioner.model) is Florence2ForConditionalGeneration
        assert captioner.info.family.name == "Florence-2" and captioner.info.family.styles == STYLES
        assert list(captioner.info.languages) == ["en"], style


def test_pixels_on_the_device_match_the_processor(captioners, path, images):
    captioner = captioners["short"]
    ours = normalised(captioner, decoded(captioner, images))
    theirs = AutoProcessor.from_pretrained(path)(text=["<CAPTION>"] * len(images),
                                                 images=[Image.open(p).convert("RGB") for p in images],
                                                 return_tensors="pt").pixel_values
    print(f"largest pixel difference from the processor's pixel_values: {(ours - theirs).abs().max().item():.2e}")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_prompt_ids_are_the_processors_for_each_style(captioners, path):
    processor = AutoProcessor.from_pretrained(path)
    blank = Image.new("RGB", (45, 37))  # resized by the processor: any size gives the same ids
    for style, captioner in captioners.items():
        ids = processor(text=[TASKS[style]], images=[blank], return_tensors="pt").input_ids[0].tolist()
        assert captioner.info.languages["en"] == tuple(ids), style
    assert len({c.info.languages["en"] for c in captioners.values()}) == 3  # each style its own task


def test_captions_are_what_its_own_processor_and_generate_write_in_each_style(captioners, path, images):
    for style, captioner in captioners.items():
        ours = generate.caption(captioner, decoded(captioner, images), [["en"]] * len(images),
                                GenerationConfig(max_new_tokens=8))
        assert [r["en"].text for r in ours] == reference_florence2(path, images, "en", style, 8), style
        assert all(np.isfinite(r["en"].score) and r["en"].score <= 0 for r in ours)


def test_a_batch_captions_as_its_images_do_one_by_one(captioners, images):
    captioner, settings = captioners["detailed"], GenerationConfig(max_new_tokens=8)
    pixels = decoded(captioner, images)
    batch = generate.caption(captioner, pixels, [["en"]] * len(images), settings)
    alone = [generate.caption(captioner, pixels[i:i + 1], [["en"]], settings)[0] for i in range(len(images))]
    assert [r["en"].text for r in batch] == [r["en"].text for r in alone]
    assert [r["en"].score for r in batch] == pytest.approx([r["en"].score for r in alone], abs=1e-5)


def test_the_vision_tower_runs_once_per_image_whatever_the_search(captioners, images, monkeypatch):
    captioner = captioners["short"]
    tower = captioner.model.model.vision_tower
    calls = []
    monkeypatch.setattr(tower, "forward", lambda *a, _f=tower.forward, **k: calls.append(a[0].shape[0]) or _f(*a, **k))
    pixels = decoded(captioner, images)
    generate.caption(captioner, pixels, [["en"]] * len(images), GenerationConfig(max_new_tokens=4, num_beams=3))
    assert calls == [len(images)]  # one batch through the tower; the three beams reuse its features


@torch.inference_mode()
def test_teacher_forced_logits_are_generates_own(captioners, images):
    """``logits`` of the sequences greedy search wrote: its next-token logits at every caption step."""
    captioner = captioners["paragraph"]
    family, model = captioner.info.family, captioner.model
    encoded = family.encode(model, normalised(captioner, decoded(captioner, images)))
    prompt = torch.tensor([captioner.info.languages["en"]] * len(images))
    out = family.generate(model, encoded, prompt, max_new_tokens=6, num_beams=1, return_dict_in_generate=True,
                          output_logits=True)
    start = family.caption_start(prompt.shape[1])
    assert out.sequences.shape == (len(images), start + 6)
    logits = family.logits(model, encoded, out.sequences, prompt.shape[1])  # (B, L-1, V)
    torch.testing.assert_close(logits[:, start - 1:], torch.stack(out.logits, dim=1), atol=1e-4, rtol=1e-4)


def test_beam_search_scores_are_finite_and_at_most_zero(captioners, images):
    captioner = captioners["short"]
    out = generate.caption(captioner, decoded(captioner, images), [["en"]] * len(images),
                           GenerationConfig(max_new_tokens=6, num_beams=2))
    assert all(np.isfinite(r["en"].score) and r["en"].score <= 0 and r["en"].text for r in out)


@pytest.mark.parametrize("settings, flag", [(dict(prompt="Describe it in {language}."), "--prompt"),
                                            (dict(image_size=(64, 64)), "--image-size")])
def test_a_prompt_or_image_size_is_refused_by_name(path, settings, flag):
    with pytest.raises(loading.ModelError, match=f"Florence-2 checkpoint.*{flag}"):
        loading.describe(ModelConfig(name=str(path), **settings))


def test_the_fast_path_writes_the_plain_paths_tokens_on_a_static_cache(captioners, images):
    """Three rows padded to a bucket of four, then two in a bucket of two; the cross-attention cache holds exactly
    the encoder's prompt."""
    captioner = replace(captioners["detailed"], caches={})
    pixels = decoded(captioner, images)
    for rows in (3, 2):
        requests = [["en"]] * rows
        ours = generate.caption(captioner, pixels[:rows], requests, GenerationConfig(max_new_tokens=8, fast="on"))
        plain = generate.caption(captioner, pixels[:rows], requests, GenerationConfig(max_new_tokens=8, fast="off"))
        assert [r["en"].text for r in ours] == [r["en"].text for r in plain], rows
        assert [r["en"].score for r in ours] == pytest.approx([r["en"].score for r in plain], abs=1e-5)
    prompt = len(captioner.info.languages["en"])
    assert sorted(captioner.caches) == [(fast.bucket(2), prompt + 8), (fast.bucket(3), prompt + 8)]
    for cache in captioner.caches.values():
        assert isinstance(cache, EncoderDecoderCache)
        assert cache.cross_attention_cache.get_max_length() == prompt
