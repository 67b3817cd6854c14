"""The whole job (real Ray, real files) with tiny SmolVLM and Idefics3 checkpoints, in two languages."""

import pyarrow.dataset as pads
import pytest

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.run import pipeline
from families import odd_images
from family_smolvlm import KINDS, build_tiny_smolvlm, reference_smolvlm

pytestmark = pytest.mark.slow
LANGS = ("en", "fr")


@pytest.mark.parametrize("kind", KINDS)
def test_a_chat_family_captions_as_its_own_processor_and_generate_do(local_ray, kind, tmp_path):
    model = build_tiny_smolvlm(tmp_path / kind, kind)
    images = odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                                     model=ModelConfig(name=str(model), caption_style="detailed"), languages=LANGS,
                                     generation=GenerationConfig(max_new_tokens=8)))
    assert (summary.captioned, summary.failed) == (4, 0)
    rows = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist()
    written = {(r["uri"], r["lang"]): r["caption"] for r in rows}
    for lang in LANGS:
        expected = reference_smolvlm(model, images, lang, "detailed", 8)
        assert [written[(str(p), lang)] for p in images] == expected, lang
