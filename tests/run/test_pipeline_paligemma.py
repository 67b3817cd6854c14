"""The whole job (real Ray, real files) with a tiny PaliGemma 2: Parquet captions in several of its languages are
what the checkpoint's own processor and generate write."""

import pyarrow.dataset as pads
import pytest

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.run import pipeline
from families import odd_images
from family_paligemma import build_tiny_paligemma, reference_paligemma

pytestmark = pytest.mark.slow
LANGUAGES = ("en", "fr", "zh")


def test_paligemma_captions_in_its_languages_as_its_own_processor_and_generate_do(local_ray, tmp_path):
    model = build_tiny_paligemma(tmp_path / "paligemma2")
    images = odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                                     model=ModelConfig(name=str(model), caption_style="short"), languages=LANGUAGES,
                                     generation=GenerationConfig(max_new_tokens=8)))
    assert (summary.captioned, summary.failed) == (4, 0)
    rows = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist()
    written = {(r["uri"], r["lang"]): r["caption"] for r in rows}
    assert len(written) == len(images) * len(LANGUAGES)
    for lang in LANGUAGES:
        assert [written[(str(p), lang)] for p in images] == reference_paligemma(model, images, lang, "short", 8), lang
