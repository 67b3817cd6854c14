import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from captioner import generate, images, model
from captioner.config import GenerationConfig, ModelConfig
from conftest import build_tiny_model, jpeg_bytes


@pytest.fixture(scope="module")
def captioner(tiny_model):
    return model.load(ModelConfig(name=str(tiny_model)))


@pytest.fixture(scope="module")
def pixels():
    return np.stack([images.decode(jpeg_bytes(i), (32, 32)).pixels for i in range(4)])


def test_device_normalisation_matches_the_image_processor(captioner, tiny_model, pixels):
    processor = AutoImageProcessor.from_pretrained(tiny_model)
    expected = processor(images=[Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
    torch.testing.assert_close(generate.pixel_values(captioner, pixels), expected, atol=1e-5, rtol=0)


def test_greedy_is_token_for_token_model_generate(captioner, pixels):
    """Our path (encoder once, prompt, generate) writes what a plain ``model.generate`` writes."""
    ours = generate.caption(captioner, pixels, [["en"]] * len(pixels), GenerationConfig(max_new_tokens=8))
    reference = captioner.model.generate(pixel_values=generate.pixel_values(captioner, pixels), max_new_tokens=8)
    texts = captioner.tokenizer.batch_decode(reference, skip_special_tokens=True)
    assert [r["en"].text for r in ours] == [t.strip() for t in texts]
    assert all(r["en"].text for r in ours)


def test_score_is_mean_token_logprob(captioner, pixels):
    result = generate.caption(captioner, pixels[:1], [["en"]], GenerationConfig(max_new_tokens=6))[0]["en"]
    tokens = captioner.tokenizer(result.text, add_special_tokens=False).input_ids
    ids = [captioner.model.config.decoder_start_token_id, *tokens]
    with torch.no_grad():
        logits = captioner.model(
            pixel_values=generate.pixel_values(captioner, pixels[:1]), decoder_input_ids=torch.tensor([ids])
        ).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = np.mean([logprobs[i, tok].item() for i, tok in enumerate(tokens)])  # no EOS: it ran to the cap
    assert result.score == pytest.approx(expected, abs=1e-4)
    assert result.score < 0


def test_each_image_gets_only_the_languages_it_asks_for(tmp_path, pixels):
    multi = model.load(ModelConfig(name=str(build_tiny_model(tmp_path / "m", languages=("en", "fr")))))
    out = generate.caption(multi, pixels[:3], [["en", "fr"], ["fr"], []], GenerationConfig(max_new_tokens=4))
    assert [sorted(r) for r in out] == [["en", "fr"], ["fr"], []]
    assert all(np.isfinite(c.score) for r in out for c in r.values())


def test_beam_search_and_seeded_sampling(captioner, pixels):
    beams = generate.caption(captioner, pixels, [["en"]] * 4, GenerationConfig(max_new_tokens=5, num_beams=3))
    assert all(r["en"].text for r in beams)
    sampling = GenerationConfig(max_new_tokens=6, temperature=1.5, top_p=0.95)
    first = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seed=7)
    again = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seed=7)
    other = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seed=8)
    assert first == again
    assert first != other


def test_empty_batch(captioner):
    assert generate.caption(captioner, np.zeros((0, 32, 32, 3), np.uint8), [], GenerationConfig()) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_cuda_agrees_with_fp32(tiny_model, captioner, pixels):
    gpu = model.load(ModelConfig(name=str(tiny_model)), device=torch.device("cuda"))
    assert gpu.dtype == torch.float16 and next(gpu.model.parameters()).dtype == torch.float16
    settings = GenerationConfig(max_new_tokens=6)
    on_gpu = generate.caption(gpu, pixels, [["en"]] * len(pixels), settings)
    on_cpu = generate.caption(captioner, pixels, [["en"]] * len(pixels), settings)
    assert all(np.isfinite(r["en"].score) for r in on_gpu)
    assert [r["en"].score for r in on_gpu] == pytest.approx([r["en"].score for r in on_cpu], abs=0.05)
