"""The caption actor and the write stage called directly, without Ray: plain classes and functions."""

import pyarrow as pa
import pytest
import torch

from captioner import schema
from captioner.config import DecodeConfig, GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig, VideoConfig
from captioner.fingerprint import fingerprints
from captioner.models import loading as model
from captioner.run import reading, stages
from captioner.store import state
from results import todo_rows


def test_caption_actor_writes_one_row_per_image(image_folder, tiny_model):
    paths = sorted(image_folder.glob("*.jpg"))
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = reading.read_and_decode(todo_rows(paths), {schema.PIXELS: info.image}, StorageConfig(), DecodeConfig(),
                                      VideoConfig(), "en")
    config = RunConfig(input=InputConfig(str(image_folder)), output="unused", model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4))
    actor = stages.CaptionActor(config, run_id="run-1", num_threads=1, fingerprints=fingerprints(config))
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



def test_a_caption_actor_leaves_its_checks_of_the_fast_path_in_the_runs_folder(image_folder, tiny_model, tmp_path):
    paths = sorted(image_folder.glob("*.jpg"))
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = reading.read_and_decode(todo_rows(paths), {schema.PIXELS: info.image}, StorageConfig(), DecodeConfig(),
                                      VideoConfig(), "en")
    config = RunConfig(input=InputConfig(str(image_folder)), output=str(tmp_path),
                       model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4, fast="on"))
    actor = stages.CaptionActor(config, run_id="run-1", num_threads=1, fingerprints=fingerprints(config))
    for _ in range(2):  # the second batch of the shape is not checked again
        actor(decoded)
    checks = state.fast_checks(str(tmp_path), "run-1")
    assert [c["verdict"] for c in checks] == ["fast"] and checks[0]["check_s"] > 0


def _actor_and_batch(image_folder, tiny_model, n: int):
    paths = sorted(image_folder.glob("*.jpg"))[:n]
    info = model.describe(ModelConfig(name=str(tiny_model)))
    decoded = reading.read_and_decode(todo_rows(paths), {schema.PIXELS: info.image}, StorageConfig(), DecodeConfig(),
                                      VideoConfig(), "en")
    config = RunConfig(input=InputConfig(str(image_folder)), output="unused", model=ModelConfig(name=str(tiny_model)),
                       generation=GenerationConfig(max_new_tokens=4))
    return stages.CaptionActor(config, run_id="r", num_threads=1, fingerprints={"en": "f"}), decoded


def test_out_of_memory_halves_the_batch_down_to_one_image(image_folder, tiny_model, monkeypatch):
    actor, decoded = _actor_and_batch(image_folder, tiny_model, 4)
    describe, sizes = actor._describe, []

    def short_of_memory(batch, rows):
        sizes.append(len(rows))
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return describe(batch, rows)

    monkeypatch.setattr(actor, "_describe", short_of_memory)
    out = actor(decoded)
    ok = [e is None for e in decoded[schema.ERROR_TYPE]]
    assert sizes[0] == sum(ok) and sorted(sizes)[:sum(ok)] == [1] * sum(ok)  # halved down to single images
    assert out[schema.ERROR_TYPE].null_count == sum(ok)  # every decodable image captioned


def test_a_device_failure_ends_the_actor_process_for_ray_to_restart(image_folder, tiny_model, monkeypatch):
    actor, decoded = _actor_and_batch(image_folder, tiny_model, 2)
    exits = []

    def broken(batch, rows):
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(actor, "_describe", broken)
    def exit_now(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(stages.os, "_exit", exit_now)
    with pytest.raises(SystemExit):
        actor(decoded)
    assert exits == [stages.DEVICE_FAILURE_EXIT]
    assert stages.is_device_failure(RuntimeError("CUDA error: device-side assert triggered"))
    assert not stages.is_device_failure(torch.OutOfMemoryError("CUDA out of memory"))
    assert not stages.is_device_failure(ValueError("bad input"))
