import shutil

import pytest
import torch
from safetensors.torch import load_file

from captioner.models import loading as model
from captioner.config import ModelConfig
from conftest import build_tiny_model


def test_loads_a_saved_folder_with_from_pretrained(tiny_model):
    """The path users take: ``from_pretrained`` on a folder; a hub id differs only by the name."""
    loaded = model.load(ModelConfig(name=str(tiny_model)))
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert not loaded.model.training
    assert loaded.info.family.name == "vision encoder-decoder"
    assert loaded.info.languages == {"en": (loaded.model.config.decoder_start_token_id,)}
    assert (loaded.info.image.resize.height, loaded.info.image.resize.width) == (32, 32)
    assert loaded.info.image.mean == (0.5, 0.5, 0.5)
    saved = load_file(str(tiny_model / "model.safetensors"))
    name = next(k for k in saved if k.endswith("lm_head.weight") or k.endswith("wte.weight"))
    assert torch.equal(loaded.model.state_dict()[name], saved[name])


def test_language_tokens_are_found(tmp_path):
    path = build_tiny_model(tmp_path / "m", languages=("en", "fr", "de"))
    info = model.describe(ModelConfig(name=str(path)))
    assert sorted(info.languages) == ["de", "en", "fr"]
    start = info.languages["en"][0]
    assert all(len(ids) == 2 and ids[0] == start for ids in info.languages.values())  # the start, then the language


def test_object_store_folder_is_copied_once_per_node(tiny_model, s3, s3_server, tmp_path):
    fs, bucket = s3
    fs.put(str(tiny_model) + "/", f"{bucket}/models/tiny/", recursive=True)
    config = ModelConfig(name=f"s3://{bucket}/models/tiny", cache_dir=str(tmp_path / "cache"))
    opts = {"endpoint_url": s3_server}
    loaded = model.load(config, opts)
    assert loaded.info.image.resize.height == 32
    first = model.local_path(config, opts)
    assert model.local_path(config, opts) == first
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_missing_object_store_model_says_so(s3, s3_server, tmp_path):
    _, bucket = s3
    config = ModelConfig(name=f"s3://{bucket}/nothing-here", cache_dir=str(tmp_path))
    with pytest.raises(model.ModelError, match="does not exist"):
        model.describe(config, {"endpoint_url": s3_server})


def test_translator_and_scorer_load_from_folders(tiny_marian, tiny_clip):
    translator = model.load_translator(ModelConfig(name=str(tiny_marian)))
    assert type(translator.tokenizer).__name__ == "MarianTokenizer" and not translator.model.training
    scorer = model.load_scorer(ModelConfig(name=str(tiny_clip)))
    assert scorer.image.resize.crop and (scorer.image.resize.height, scorer.image.resize.width) == (32, 32)


def _pickled(tiny_model, folder):
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_pickle_weights_load_through_the_weights_only_unpickler(tiny_model, tmp_path, caplog):
    folder = _pickled(tiny_model, tmp_path / "pickled")
    with caplog.at_level("INFO", logger="captioner.models.loading"):
        loaded = model.load(ModelConfig(name=str(folder)))
    assert any("weights-only unpickler" in r.getMessage() for r in caplog.records)
    reference = model.load(ModelConfig(name=str(tiny_model))).model.state_dict()
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in reference.items())
    with pytest.raises(model.ModelError, match="--safetensors-only"):
        model.load(ModelConfig(name=str(folder), safetensors_only=True))


class _Payload:
    """Unpickling this runs ``open(path, "w")``: the side effect a hostile checkpoint would have."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tiny_model, tmp_path):
    folder = _pickled(tiny_model, tmp_path / "hostile")
    marker = tmp_path / "ran"
    weights = load_file(str(tiny_model / "model.safetensors"))
    torch.save({**weights, "payload": _Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(model.ModelError, match="would run code"):
        model.load(ModelConfig(name=str(folder)))
    assert not marker.exists()


def test_a_checkpoint_of_no_family_is_refused_naming_those_there_are(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(model.ModelError, match=r"'bert' checkpoint.*vision encoder-decoder.*GIT.*BLIP"):
        model.describe(ModelConfig(name=str(tmp_path)))


def test_checkpoint_code_never_runs(tiny_model, tmp_path):
    """A checkpoint whose image processor points at its own Python file: refused, and the file never imported."""
    import json

    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass EvilProcessor: pass\n")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["auto_map"] = {"AutoImageProcessor": "evil.EvilProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    info = model.describe(ModelConfig(name=str(folder)))  # transformers' own class, named alongside, is used
    assert info.image.resize.height == 32 and not marker.exists()

    del config["image_processor_type"]  # now only the checkpoint's code could read it
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(model.ModelError, match="never runs checkpoint code"):
        model.describe(ModelConfig(name=str(folder)))
    assert not marker.exists()


def test_object_keys_cannot_escape_the_model_copy(tiny_model, s3, s3_server, tmp_path):
    fs, bucket = s3
    fs.put(str(tiny_model) + "/", f"{bucket}/models/tiny/", recursive=True)
    fs.pipe(f"{bucket}/models/tiny/../../../../../escaped.txt", b"outside")
    listed = fs.find(f"{bucket}/models/tiny")
    assert any(".." in key for key in listed), listed  # the store kept the hostile key as it is
    cache = tmp_path / "deep" / "er" / "cache"
    config = ModelConfig(name=f"s3://{bucket}/models/tiny", cache_dir=str(cache))
    with pytest.raises(model.ModelError, match="outside the local copy"):
        model.local_path(config, {"endpoint_url": s3_server})
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not cache.exists() or not list(cache.iterdir())


def test_dtype_is_a_setting(tiny_model):
    assert model.load(ModelConfig(name=str(tiny_model))).dtype == torch.float32  # auto on CPU
    loaded = model.load(ModelConfig(name=str(tiny_model), dtype="bf16"))
    assert loaded.dtype == torch.bfloat16 and next(loaded.model.parameters()).dtype == torch.bfloat16
    assert model.torch_dtype("fp16", torch.device("cpu")) == torch.float16


@pytest.mark.parametrize("setting, message", [
    ({"caption_style": "paragraph"}, "writes only short captions; leave out --caption-style paragraph"),
    ({"prompt": "Describe it in {language}."}, "takes no instruction; --prompt is for chat models"),
    ({"image_size": (64, 64)}, "fixes the image size; leave out --image-size"),
])
def test_a_setting_the_family_has_no_use_for_is_refused_by_name(tiny_model, setting, message):
    with pytest.raises(model.ModelError, match=message):
        model.describe(ModelConfig(name=str(tiny_model), **setting))
