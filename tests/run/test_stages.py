"""The caption actor and the write stage called directly, without Ray: plain classes and functions."""

import pyarrow as pa

from captioner import schema
from captioner.config import DecodeConfig, GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig, VideoConfig
from captioner.fingerprint import fingerprints
from captioner.models import loading as model
from captioner.run import reading, stages
from results import todo_rows


def test_caption_actor_writes_one_row_per_image(image_folder, tiny_model):
    paths = sorted(image_folder.glob("*.jpg"))
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = reading.read_and_decode(todo_rows(paths), {schema.PIXELS: info.image}, StorageConfig(), DecodeConfig(),
                                      VideoConfig(), "en")
    config = RunConfig(input=InputConfig(str(image_folder)), output="unused", model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4))
    actor = stages.CaptionActor(config, run_id="run-1", num_threads=1)
    out = actor(decoded)
    assert isinstance(out, pa.Table) and out.schema == schema.IMAGE_RESULT
    assert out[schema.URI].to_pylist() == [str(p) for p in paths]
    for row in out.to_pylist():
        assert row[schema.RUN_ID] == "run-1"
        if row[schema.ERROR_TYPE]:
            assert not row[schema.RESULTS] and row[schema.ATTEMPT] == 1
        else:
            assert [r[schema.LANG] for r in row[schema.RESULTS]] == ["en"] and row[schema.MODEL] == str(tiny_model)
            assert row[schema.RESULTS][0][schema.FINGERPRINT] == fingerprints(config)["en"]

