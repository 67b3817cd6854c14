import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer, ViTModel

from captioner.train.build import build_model, prepare_output
from captioner.train.pretrain import CONCEPTS, ROLES, concept_targets, pretrain_encoder
from captioner.train.scenes import encode, render, scenes
from captioner.train.synth import PARQUET_SCHEMA
from trainkit import data, tiny_config  # noqa: F401 (data is a fixture)


def test_encoder_pretraining_names_synthetic_concepts_and_seeds_the_captioner(data, tmp_path):  # noqa: F811
    config = tiny_config(data, tmp_path / "out", encoder_pretrain_epochs=1)
    prepare_output(config)
    pretrained = pretrain_encoder(config)
    assert pretrained.encoder == str(tmp_path / "out" / "checkpoints" / "encoder")
    assert pretrained.encoder_pretrain_epochs == 0
    encoder = ViTModel.from_pretrained(pretrained.encoder)
    model = build_model(pretrained, AutoTokenizer.from_pretrained(config.output_dir))
    for name, weight in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], weight), name
    assert pretrain_encoder(config) == pretrained  # already saved: a rerun skips the work


def test_encoder_pretraining_refuses_captions_without_synthetic_concepts(tmp_path):
    image = encode(render(next(scenes(1, seed=0)), 32), "png")
    rows = {"image": [image] * 20, "caption": ["a photo"] * 20, "lang": ["en"] * 20}
    pq.write_table(pa.table(rows, schema=PARQUET_SCHEMA), tmp_path / "photos.parquet")
    config = tiny_config(tmp_path / "photos.parquet", tmp_path / "out", encoder_pretrain_epochs=1, val_fraction=0.5)
    prepare_output(config)
    with pytest.raises(ValueError, match="pass a pretrained encoder"):
        pretrain_encoder(config)


def test_targets_name_each_concept_anywhere_and_in_its_place():
    targets = concept_targets(["ein roter Kreis unter einem blauen Quadrat", "a green star", "a photo"],
                              ["de", "en", "en"]).view(3, len(ROLES), len(CONCEPTS))

    def on(row: int) -> set[tuple[str, str]]:
        return {(ROLES[r], CONCEPTS[c]) for r, c in targets[row].nonzero().tolist()}

    assert on(0) == {("any", "red"), ("any", "circle"), ("any", "blue"), ("any", "square"),
                     ("lower", "red"), ("lower", "circle"), ("upper", "blue"), ("upper", "square")}
    assert on(1) == {("any", "green"), ("any", "star")}
    assert on(2) == set()  # not a caption the grammar writes: no targets
