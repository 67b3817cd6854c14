import numpy as np
import pytest
import torch
from PIL import Image

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import generate, translation
from captioner.models import loading as model
from conftest import build_tiny_model, normalised


def test_greedy_is_token_for_token_model_generate(captioner, pixels):
    """Our path (encoder once, prompt, generate) writes what a plain ``model.generate`` writes."""
    ours = generate.caption(captioner, pixels, [["en"]] * len(pixels), GenerationConfig(max_new_tokens=8))
    reference = captioner.model.generate(pixel_values=normalised(captioner, pixels), max_new_tokens=8)
    texts = captioner.tokenizer.batch_decode(reference, skip_special_tokens=True)
    assert [r["en"].text for r in ours] == [t.strip() for t in texts]
    assert all(r["en"].text for r in ours)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_the_benchmark_settings_are_token_for_token_model_generate(demo, scenes, num_beams):
    """benchmarks/bench.py's settings (batch 16, 32 new tokens) with a language-token prompt, captions of
    different lengths that end before the cap, greedy and beam search."""
    settings = GenerationConfig(max_new_tokens=32, num_beams=num_beams)
    x = normalised(demo, scenes)
    for lang in ("en", "fr"):
        ours = generate.caption(demo, scenes, [[lang]] * len(scenes), settings)
        prompt = torch.tensor([demo.info.languages[lang]] * len(scenes))
        reference = demo.model.generate(pixel_values=x, decoder_input_ids=prompt, max_new_tokens=32,
                                        num_beams=num_beams)
        texts = demo.tokenizer.batch_decode(reference[:, 2:], skip_special_tokens=True)
        assert [r[lang].text for r in ours] == [t.strip() for t in texts]
        assert reference.shape[1] < 2 + 32  # every caption ended before the cap
        assert len({len(t.split()) for t in texts}) > 1


def test_each_image_gets_only_the_languages_it_asks_for(tmp_path, pixels):
    multi = model.load(ModelConfig(name=str(build_tiny_model(tmp_path / "m", languages=("en", "fr")))))
    out = generate.caption(multi, pixels[:3], [["en", "fr"], ["fr"], []], GenerationConfig(max_new_tokens=4))
    assert [sorted(r) for r in out] == [["en", "fr"], ["fr"], []]
    assert all(np.isfinite(c.score) for r in out for c in r.values())


def test_beam_search_and_seeded_sampling(captioner, pixels):
    beams = generate.caption(captioner, pixels, [["en"]] * 4, GenerationConfig(max_new_tokens=5, num_beams=3))
    assert all(r["en"].text for r in beams)
    sampling = GenerationConfig(max_new_tokens=6, temperature=1.5, top_p=0.95)
    first = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seeds=[7, 8, 9, 10])
    again = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seeds=[7, 8, 9, 10])
    other = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seeds=[17, 18, 19, 20])
    assert first == again
    assert first != other


def test_a_sampled_caption_depends_on_its_image_and_seed_not_on_its_batch(captioner, pixels):
    """The same image with the same seed, alone or with companions, resumed or retried: the same caption."""
    sampling = GenerationConfig(max_new_tokens=8, temperature=1.5, top_p=0.9)
    batch = generate.caption(captioner, pixels, [["en"]] * 4, sampling, seeds=[1, 2, 3, 4])
    alone = generate.caption(captioner, pixels[2:3], [["en"]], sampling, seeds=[3])
    shuffled = generate.caption(captioner, pixels[[3, 2]], [["en"]] * 2, sampling, seeds=[4, 3])
    assert batch[2]["en"].text == alone[0]["en"].text == shuffled[1]["en"].text
    assert batch[3]["en"].text == shuffled[0]["en"].text
    # A batch of another size may sum in another order: the score agrees to float precision, not to the bit.
    assert batch[2]["en"].score == pytest.approx(alone[0]["en"].score, rel=1e-5)
    assert len({r["en"].text for r in batch}) > 1  # four seeds, four draws


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


def test_describe_translates_the_source_and_scores_everything(captioner, translator, scorer, pixels):
    models = generate.Models(captioner=captioner, translators={"fr": translator, "de": translator}, scorer=scorer)
    clip_pixels = pixels  # the tiny CLIP takes 32 x 32 too
    out = generate.describe(models, pixels[:2], [["en", "fr", "de"], ["fr"]], GenerationConfig(max_new_tokens=5),
                            clip_pixels=clip_pixels[:2], source_captions=[None, "a stored english caption"])
    assert sorted(out[0]) == ["de", "en", "fr"] and sorted(out[1]) == ["fr"]
    assert out[0]["en"].producer == "native" and out[0]["en"].source_lang is None
    assert out[0]["fr"].producer == translator.name and out[0]["fr"].source_lang == "en"
    direct = translation.translate(translator, [out[0]["en"].text, "a stored english caption"], "en", "fr",
                                   GenerationConfig(max_new_tokens=5))
    assert [out[0]["fr"].text, out[1]["fr"].text] == [d.text for d in direct]
    assert all(c.clip_score is not None and 0 <= c.clip_score <= 2.5 for r in out for c in r.values())




def _multilingual(kind: str, folder):
    """A captioner of each family that writes several languages, and its languages."""
    from families import build_tiny_clip_mbart
    from family_paligemma import build_tiny_paligemma
    from family_qwen_vl import SIZE, build_tiny_qwen
    from family_smolvlm import build_tiny_smolvlm

    from captioner.config import DEMO_MODEL

    settings = {"demo": lambda: ModelConfig(name=DEMO_MODEL),
                "clip-mbart50": lambda: ModelConfig(name=str(build_tiny_clip_mbart(folder))),
                "paligemma": lambda: ModelConfig(name=str(build_tiny_paligemma(folder))),
                "qwen2_5_vl": lambda: ModelConfig(name=str(build_tiny_qwen(folder)), image_size=SIZE),
                "smolvlm": lambda: ModelConfig(name=str(build_tiny_smolvlm(folder)))}[kind]()
    return model.load(settings), ["en", "fr", "de"] + (["es"] if kind != "clip-mbart50" else [])


@pytest.mark.parametrize("kind", ["demo", "clip-mbart50", "paligemma", "qwen2_5_vl", "smolvlm"])
@pytest.mark.parametrize("sampled", [False, True])
def test_all_languages_in_one_call_write_what_one_call_per_language_does(kind, sampled, tmp_path, scenes):
    """rows = images x languages, each with its own prompt: the same tokens and scores as a call per language."""
    captioner, langs = _multilingual(kind, tmp_path / kind)
    size = captioner.info.image.resize
    images = np.stack([np.asarray(Image.fromarray(s).resize((size.width, size.height))) for s in scenes[:5]])
    settings = GenerationConfig(max_new_tokens=6, temperature=0.9 if sampled else None)
    together = generate.caption(captioner, images, [langs] * len(images), settings, seeds=list(range(5)))
    for lang in langs:
        alone = generate.caption(captioner, images, [[lang]] * len(images), settings, seeds=list(range(5)))
        assert [r[lang].text for r in together] == [r[lang].text for r in alone], lang
        assert [r[lang].score for r in together] == pytest.approx([r[lang].score for r in alone], abs=1e-5)
    lengths = {len(captioner.info.languages[lang]) for lang in langs}
    assert len(generate.one_call_each(captioner.info.languages, [langs] * len(images))) == len(lengths)
    if kind in ("demo", "clip-mbart50", "paligemma"):
        assert len(lengths) == 1  # language tokens, codes or "caption xx": every language in one call
