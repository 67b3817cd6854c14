import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import generate, loading
from conftest import decode_at, normalised
from families import BUILDERS, LANGUAGES, odd_images, reference_captions

CLASSES = {"git": "GitForCausalLM", "blip": "BlipForConditionalGeneration",
           "clip-mbart50": "VisionEncoderDecoderModel", "vit-gpt2-pickle": "VisionEncoderDecoderModel"}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, tmp_path_factory):
    return request.param, BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("png"), n=4)


def test_each_family_loads_into_its_own_class_and_writes_its_languages(checkpoint):
    kind, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    assert type(captioner.model).__name__ == CLASSES[kind]
    assert set(LANGUAGES[kind]) <= set(captioner.info.languages)
    assert len(captioner.info.languages) == (52 if kind == "clip-mbart50" else 1)  # mBART-50's codes, or one


def test_pixels_on_the_device_match_the_image_processor(checkpoint, images):
    """Decode resizes once to uint8 on the CPU, the device normalises: the same tensor as the processor's."""
    _, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    ours = normalised(captioner, np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images]))
    theirs = AutoImageProcessor.from_pretrained(path)(images=[Image.open(p).convert("RGB") for p in images],
                                                      return_tensors="pt").pixel_values
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_captions_are_what_the_models_own_generate_writes(checkpoint, images):
    """Greedy, fp32, every language the checkpoint writes: token for token the model's own generate."""
    kind, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    pixels = np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])
    for lang in LANGUAGES[kind]:
        ours = generate.caption(captioner, pixels, [[lang]] * len(images), GenerationConfig(max_new_tokens=8))
        assert [r[lang].text for r in ours] == reference_captions(path, images, lang, 8), lang
        assert all(np.isfinite(r[lang].score) for r in ours)


def test_beam_search_scores_by_a_teacher_forced_pass_in_every_family(checkpoint, images):
    kind, path = checkpoint
    captioner = loading.load(ModelConfig(name=str(path)))
    pixels = np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in images])
    lang = LANGUAGES[kind][0]
    out = generate.caption(captioner, pixels, [[lang]] * len(images), GenerationConfig(max_new_tokens=6, num_beams=2))
    assert all(np.isfinite(r[lang].score) and r[lang].score <= 0 for r in out)


def test_a_video_git_captions_a_clip_from_its_frames_as_its_own_generate_does(tmp_path, images):
    """A GIT with a temporal embedding per frame (as microsoft/git-base-vatex): (B, F, 3, H, W) in."""
    from transformers import GitForCausalLM

    from families import build_tiny_git

    path = build_tiny_git(tmp_path / "git-vatex", frames=3)
    captioner = loading.load(ModelConfig(name=str(path)))
    assert captioner.info.image.frames == 3
    clip = images[:3]  # three frames of one segment
    frames = np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in clip])[None]  # (1, 3, H, W, 3)
    ours = generate.caption(captioner, frames, [["en"]], GenerationConfig(max_new_tokens=8))[0]["en"].text
    pixels = AutoImageProcessor.from_pretrained(path)(images=[Image.open(p).convert("RGB") for p in clip],
                                                      return_tensors="pt").pixel_values[None]  # (1, 3, 3, H, W)
    with torch.inference_mode():
        reference = GitForCausalLM.from_pretrained(path).eval().generate(pixel_values=pixels, max_new_tokens=8)
    assert ours == captioner.tokenizer.batch_decode(reference, skip_special_tokens=True)[0].strip()
