"""The whole job (real Ray, real files) with a tiny Florence-2: the run's caption style reaches the caption actors,
and the Parquet holds what the checkpoint's own processor and generate write; another family on its output is
refused as other settings are."""

import pyarrow.dataset as pads
import pytest

from captioner.config import ConfigError, GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.run import pipeline
from families import odd_images
from family_florence2 import build_tiny_florence2, reference_florence2
from family_paligemma import build_tiny_paligemma

pytestmark = pytest.mark.slow


def test_florence2_captions_in_the_runs_style_as_its_own_processor_and_generate_do(local_ray, tmp_path):
    model = build_tiny_florence2(tmp_path / "florence2")
    images = odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                                     model=ModelConfig(name=str(model), caption_style="detailed"), languages=("en",),
                                     generation=GenerationConfig(max_new_tokens=8)))
    assert (summary.captioned, summary.failed) == (4, 0)
    rows = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist()
    written = {(r["uri"], r["lang"]): r["caption"] for r in rows}
    assert len(written) == 4
    expected = reference_florence2(model, images, "en", "detailed", 8)
    assert [written[(str(p), "en")] for p in images] == expected
    assert expected != reference_florence2(model, images, "en", "short", 8)  # the style made a difference

    # Another family on the same output is other settings: refused before any work, nothing written.
    other = build_tiny_paligemma(tmp_path / "paligemma")
    with pytest.raises(ConfigError, match="other settings.*--mode append"):
        pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                               model=ModelConfig(name=str(other)), languages=("en",),
                               generation=GenerationConfig(max_new_tokens=8)))
    assert pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist() == rows
