"""The stage adapters called directly, without Ray: they are plain functions and classes."""

import numpy as np
import pyarrow as pa

from captioner import model, schema, stages
from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig
from captioner.images import Resize
from conftest import BAD, GOOD


def _batch(paths, langs="en"):
    return {
        schema.URI: np.array([str(p) for p in paths], dtype=object),
        schema.SIZE: np.arange(len(paths)),
        schema.ETAG: np.array(["e"] * len(paths), dtype=object),
        schema.LANGS: np.array([langs] * len(paths), dtype=object),
    }


def test_read_and_decode_turns_failures_into_values(image_folder):
    paths = sorted(p for p in image_folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    spec = model.ImageSpec(resize=Resize(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    clip = model.ImageSpec(resize=Resize(16, 16, crop=True), mean=(0.5,) * 3, std=(0.5,) * 3, rescale=1 / 255)
    batch = _batch(paths + [image_folder / "gone.jpg"])
    out = stages.read_and_decode(batch, {schema.PIXELS: spec, schema.CLIP_PIXELS: clip}, StorageConfig())
    assert out[schema.CLIP_PIXELS].shape == (len(paths) + 1, 16, 16, 3)
    assert out[schema.PIXELS].shape == (len(paths) + 1, 32, 32, 3)
    errors = {uri.rsplit("/", 1)[1]: kind for uri, kind in zip(out[schema.URI], out[schema.ERROR_TYPE]) if kind}
    assert errors == {**BAD, "gone.jpg": "read_error"}
    ok = [kind is None for kind in out[schema.ERROR_TYPE]]
    assert sum(ok) == GOOD and (out[schema.WIDTH][ok] > 0).all()


def test_caption_actor_writes_one_row_per_image(image_folder, tiny_model):
    paths = sorted(image_folder.glob("*.jpg"))
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = stages.read_and_decode(_batch(paths), {schema.PIXELS: info.image}, StorageConfig())
    config = RunConfig(input=InputConfig(str(image_folder)), output="unused", model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4))
    actor = stages.CaptionActor(config, run_id="run-1", num_threads=1)
    out = actor(decoded)
    assert isinstance(out, pa.Table) and out.schema == schema.IMAGE_RESULT
    assert out[schema.URI].to_pylist() == [str(p) for p in paths]
    for row in out.to_pylist():
        assert row[schema.RUN_ID] == "run-1"
        if row[schema.ERROR_TYPE]:
            assert not row[schema.RESULTS]
        else:
            assert [r[schema.LANG] for r in row[schema.RESULTS]] == ["en"] and row[schema.MODEL] == str(tiny_model)
