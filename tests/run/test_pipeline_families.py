"""The whole job (real Ray, real files) with a checkpoint of every family, and with models that cannot caption."""

import json
import logging
import shutil

import pyarrow.dataset as pads
import pytest

from captioner import cli
from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.models.loading import ModelError
from captioner.run import pipeline
from families import BUILDERS, LANGUAGES, odd_images, reference_captions

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_family_captions_as_its_own_processor_and_generate_do(local_ray, kind, tmp_path):
    model = BUILDERS[kind](tmp_path / kind)
    images = odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                                     model=ModelConfig(name=str(model)), languages=LANGUAGES[kind],
                                     generation=GenerationConfig(max_new_tokens=8)))
    assert (summary.captioned, summary.failed) == (4, 0)
    rows = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table().to_pylist()
    written = {(r["uri"], r["lang"]): r["caption"] for r in rows}
    for lang in LANGUAGES[kind]:
        expected = reference_captions(model, images, lang, 8)
        assert [written[(str(p), lang)] for p in images] == expected, lang


def test_a_model_that_fails_on_every_batch_fails_the_run(local_ray, tiny_model, image_folder, tmp_path, caplog):
    """Its processor asks for 48 px images, its encoder takes 32: no image can pass, so no image is blamed."""
    broken = shutil.copytree(tiny_model, tmp_path / "broken")
    processor = json.loads((broken / "preprocessor_config.json").read_text())
    processor["size"] = {"height": 48, "width": 48}
    (broken / "preprocessor_config.json").write_text(json.dumps(processor))
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="captioner"):
        status = cli.main(["run", str(image_folder), str(out), "--model", str(broken), "--max-new-tokens", "4"])
    assert status == 1
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "captioner")
    assert "run failed: the model cannot caption" in message and "48" in message
    assert not (out / "errors").exists()  # not an error row per image


def test_a_checkpoint_of_no_family_is_refused_before_any_work(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8).save_pretrained(tmp_path / "bert")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelError, match="captions with: vision encoder-decoder"):
        pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=str(tmp_path / "out"),
                               model=ModelConfig(name=str(tmp_path / "bert"))))
    assert not (tmp_path / "out").exists()


def test_a_run_on_the_fast_path_records_each_shapes_check_in_run_json(local_ray, tiny_model, tmp_path):
    odd_images(tmp_path / "photos", n=4)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(tmp_path / "photos")), output=out,
                                     model=ModelConfig(name=str(tiny_model)),
                                     generation=GenerationConfig(max_new_tokens=8, fast="on")))
    record = json.loads((tmp_path / "out" / "runs" / summary.run_id / "run.json").read_text())
    assert [c["verdict"] for c in record["fast_checks"]] == ["fast"] and record["fast_checks"][0]["batch"] == 4
