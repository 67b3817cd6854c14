"""The fast path (static KV cache, batches padded to powers of two; compiled on CUDA) writes what plain generate
writes, and every case it cannot serve falls back to the plain path. On CPU in fp32 without compiling (compiling on
a CPU takes minutes); the compiled path runs in the GPU-marked test."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import EncoderDecoderCache

from captioner.config import GenerationConfig, ModelConfig
from captioner.models import fast, generate, loading
from conftest import build_tiny_model, decode_at, normalised
from families import BUILDERS, odd_images

FAST, PLAIN = GenerationConfig(max_new_tokens=32, fast="on"), GenerationConfig(max_new_tokens=32, fast="off")


def fresh(captioner: loading.Captioner) -> loading.Captioner:
    """The same weights with no static caches or checks yet."""
    return replace(captioner, caches={}, checks=[])


def test_buckets_are_the_next_power_of_two():
    assert [fast.bucket(n) for n in (1, 2, 3, 5, 8, 9, 13, 64, 100, 1000, 1024)] == [
        1, 2, 4, 8, 8, 16, 16, 64, 128, 1024, 1024]


def test_auto_is_on_for_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [fast.wanted(s, cpu) for s in ("auto", "on", "off")] == [False, True, False]
    assert [fast.wanted(s, cuda) for s in ("auto", "on", "off")] == [True, True, False]


@torch.inference_mode()
def test_greedy_on_a_static_cache_is_plain_generate_token_for_token_and_stops_early(demo, scenes):
    """13 rows (not a bucket) padded to 16, captions that end before the cap: the same sequences and step logits,
    and the loop stops when the real captions have ended, as plain generate's does."""
    captioner = fresh(demo)
    x = normalised(captioner, scenes[:13])
    encoded = captioner.info.family.encode(captioner.model, x)
    prompt = torch.tensor([captioner.info.languages["fr"]] * 13)  # (13, 2)
    search = dict(max_new_tokens=32, num_beams=1, return_dict_in_generate=True, output_logits=True)
    plain = captioner.info.family.generate(captioner.model, encoded, prompt, **search)
    ours = fast.generate(captioner, encoded, prompt, **search)
    assert torch.equal(ours.sequences, plain.sequences)
    assert ours.sequences.shape[1] < 2 + 32  # stopped early
    assert len(ours.logits) == len(plain.logits) and ours.logits[0].shape == plain.logits[0].shape
    torch.testing.assert_close(torch.stack(ours.logits), torch.stack(plain.logits), atol=1e-4, rtol=1e-4)
    assert list(captioner.caches) == [(16, 2 + 32)]
    assert isinstance(captioner.caches[16, 34], EncoderDecoderCache)


def test_captions_and_scores_match_the_plain_path_across_batches_and_languages(demo, scenes):
    """Two batch sizes in one bucket and both languages of the demo model: the cache is reused after a reset."""
    captioner = fresh(demo)
    for rows, lang in ((13, "en"), (14, "fr")):
        requests = [[lang]] * rows
        ours = generate.caption(captioner, scenes[:rows], requests, FAST)
        plain = generate.caption(captioner, scenes[:rows], requests, PLAIN)
        assert [r[lang].text for r in ours] == [r[lang].text for r in plain], (rows, lang)
        assert [r[lang].score for r in ours] == pytest.approx([r[lang].score for r in plain], abs=1e-4)
    assert [key[0] for key in captioner.caches] == [16]


def test_the_languages_of_a_mixed_batch_share_one_call_and_its_bucket(tmp_path, pixels):
    multi = loading.load(ModelConfig(name=str(build_tiny_model(tmp_path / "m", languages=("en", "fr")))))
    requests = [["en", "fr"], ["fr"], ["fr"], ["en"]]  # en: 2 rows, fr: 3 rows: 5 rows, a bucket of 8
    ours = generate.caption(multi, pixels, requests, GenerationConfig(max_new_tokens=8, fast="on"))
    plain = generate.caption(multi, pixels, requests, GenerationConfig(max_new_tokens=8, fast="off"))
    assert [{k: c.text for k, c in r.items()} for r in ours] == [{k: c.text for k, c in r.items()} for r in plain]
    assert sorted(key[0] for key in multi.caches) == [8]


@pytest.mark.parametrize("settings", [
    GenerationConfig(max_new_tokens=6, num_beams=3, fast="on"),  # beam search
    GenerationConfig(max_new_tokens=6, temperature=1.5, top_p=0.9, fast="on"),  # sampling
    GenerationConfig(max_new_tokens=6, fast="auto"),  # auto on a CPU
])
def test_beams_sampling_and_auto_on_cpu_take_the_plain_path(captioner, pixels, settings):
    ours = fresh(captioner)
    out = generate.caption(ours, pixels, [["en"]] * 4, settings, seeds=[1, 2, 3, 4])
    assert out == generate.caption(ours, pixels, [["en"]] * 4, replace(settings, fast="off"), seeds=[1, 2, 3, 4])
    assert ours.caches == {}  # the fast path was never entered


@pytest.mark.parametrize("kind", ["git", "blip"])
def test_families_without_a_static_cache_fall_back_silently(kind, tmp_path):
    captioner = loading.load(ModelConfig(name=str(BUILDERS[kind](tmp_path / kind))))
    pixels = np.stack([decode_at(p.read_bytes(), captioner.info.image.resize) for p in odd_images(tmp_path / "png")])
    ours = generate.caption(captioner, pixels, [["en"]] * 3, GenerationConfig(max_new_tokens=8, fast="on"))
    plain = generate.caption(captioner, pixels, [["en"]] * 3, GenerationConfig(max_new_tokens=8, fast="off"))
    assert ours == plain
    assert list(captioner.caches.values()) == [None]


def _with_fast_path(captioner: loading.Captioner, fault: str) -> loading.Captioner:
    """The captioner with a family whose fast path (``generate`` given a static cache) writes other last tokens, or
    raises as a failed compile does: what the self-check must catch."""
    base = type(captioner.info.family)

    class Faulty(base):
        def generate(self, model, encoded, prompt, **search):
            if "cache" in search and fault == "raises":
                raise RuntimeError("inductor: compilation failed")
            out = super().generate(model, encoded, prompt, **search)
            if "cache" in search:
                out.sequences[:, -1] = (out.sequences[:, -1] + 1) % 100
            return out

    return replace(fresh(captioner), info=replace(captioner.info, family=Faulty()))


@pytest.mark.parametrize("fault", ["differs", "raises"])
def test_a_fast_path_that_differs_or_fails_leaves_its_shape_to_the_plain_path(demo, scenes, fault, caplog):
    """The first batch of a shape is checked against plain generate: one warning, plain captions for that batch and
    every later one of its shape, and the verdict kept for the run record."""
    captioner = _with_fast_path(demo, fault)
    with caplog.at_level("WARNING", logger="captioner.models.fast"):
        for rows in (6, 7, 13):  # two batches of the bucket of 8, one of 16
            ours = generate.caption(captioner, scenes[:rows], [["en"]] * rows, FAST)
            assert ours == generate.caption(demo, scenes[:rows], [["en"]] * rows, PLAIN), rows
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "fast generation for batches of 8", "fast generation for batches of 16"]
    verdicts = [(check["batch"], check["verdict"]) for check in captioner.checks]
    reason = "its tokens differ from plain generate's" if fault == "differs" else (
        "failed: RuntimeError: inductor: compilation failed")
    assert verdicts == [(8, reason), (16, reason)]
    assert list(captioner.caches.values()) == [None, None]


def test_a_fast_path_that_agrees_is_checked_once_per_shape(demo, scenes):
    captioner = fresh(demo)
    for rows in (6, 7, 13, 8):
        generate.caption(captioner, scenes[:rows], [["en"]] * rows, FAST)
    assert [(c["batch"], c["verdict"]) for c in captioner.checks] == [(8, "fast"), (16, "fast")]
    assert all(c["check_s"] > 0 for c in captioner.checks)


@pytest.mark.slow
def test_compiled_on_a_cpu_is_plain_generate_token_for_token_and_compiles_once_per_shape(demo, scenes):
    """Inductor on the CPU (no CUDA graphs) at two buckets: the captions of plain generate, and no compiling after
    the first batch of a shape (dynamo's frame counter)."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig

    captioner = fresh(demo)
    compiled = CompileConfig(mode="default", dynamic=False)
    compiled._compile_all_devices = True  # transformers' own switch for compiling off CUDA
    frames = []
    torch._dynamo.reset()
    with torch.inference_mode():
        for rows in (3, 4, 7, 8, 3):  # buckets 4, 4, 8, 8, 4
            x = normalised(captioner, scenes[:rows])
            encoded = captioner.info.family.encode(captioner.model, x)
            prompt = torch.tensor([captioner.info.languages["fr"]] * rows)
            search = dict(max_new_tokens=12, num_beams=1, return_dict_in_generate=True, output_logits=True)
            ours = fast.generate(captioner, encoded, prompt, compile_config=compiled, **search)
            plain = captioner.info.family.generate(captioner.model, encoded, prompt, **search)
            assert torch.equal(ours.sequences, plain.sequences), rows
            frames.append(counters["frames"]["ok"])
    assert frames[0] >= 1 and frames[1] == frames[0] and frames[2] > frames[1] and frames[4] == frames[3] == frames[2]
    assert [(c["batch"], c["verdict"]) for c in captioner.checks] == [(4, "fast"), (8, "fast")]
    assert hasattr(captioner.model, "_compiled_call")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_on_cuda_in_fp32_is_plain_generate_token_for_token():
    """On CUDA the decoder step is compiled into CUDA graphs; a second call replays them on the same cache."""
    from captioner.config import DEMO_MODEL
    from captioner.train import scenes as synthetic

    gpu = loading.load(ModelConfig(name=DEMO_MODEL, dtype="fp32"), device=torch.device("cuda"))
    size = gpu.info.image.resize.height
    images = np.stack([np.asarray(synthetic.render(s, size)) for s in synthetic.scenes(13, seed=99)])
    for rows in (13, 13, 5):
        ours = generate.caption(gpu, images[:rows], [["en"]] * rows, GenerationConfig(max_new_tokens=32))  # auto
        plain = generate.caption(gpu, images[:rows], [["en"]] * rows, PLAIN)
        assert [r["en"].text for r in ours] == [r["en"].text for r in plain]
    assert hasattr(gpu.model, "_compiled_call") and sorted({key[0] for key in gpu.caches}) == [8, 16]
