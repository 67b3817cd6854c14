"""The whole job (real Ray, real files) with tiny Qwen2.5-VL and Qwen3-VL checkpoints, in two languages, every
image stretched to the run's one size."""

import pyarrow.dataset as pads
import pytest

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.run import pipeline
from families import odd_images
from family_qwen_vl import SIZE, build_tiny_qwen, reference_qwen

pytestmark = pytest.mark.slow
LANGS = ("en", "de")


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_a_qwen_family_captions_as_its_own_processor_and_generate_do(local_ray, kind, tmp_path):
    model = build_tiny_qwen(tmp_path / kind, kind)
    images = odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(
        input=InputConfig(str(tmp_path / "photos")), output=out, languages=LANGS,
        model=ModelConfig(name=str(model), caption_style="paragraph", image_size=SIZE),
        generation=GenerationConfig(max_new_tokens=8)))
    assert (summary.captioned, summary.failed) == (4, 0)
    rows = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist()
    written = {(r["uri"], r["lang"]): r["caption"] for r in rows}
    for lang in LANGS:
        expected = reference_qwen(model, images, lang, "paragraph", 8)
        assert [written[(str(p), lang)] for p in images] == expected, lang
