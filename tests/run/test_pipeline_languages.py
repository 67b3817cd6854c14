"""Languages on real Ray: refused before work where the model cannot write one, added later by translation with
CLIP scores, written natively by the demo model, and rows that read as another language counted and found."""

import math

import pytest

from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig
from captioner.run import pipeline
from conftest import GOOD
from pipeline_runs import read_captions, run_config

pytestmark = pytest.mark.slow


def test_language_the_model_cannot_write_is_refused_before_work(local_ray, tiny_model, image_folder, tmp_path):
    from captioner.config import ConfigError

    with pytest.raises(ConfigError, match="cannot write fr"):
        pipeline.run(run_config(tiny_model, str(image_folder), str(tmp_path / "o"), languages=("en", "fr")))
    assert not (tmp_path / "o").exists()


def test_four_languages_by_translation_with_clip_scores(local_ray, tiny_model, tiny_marian, tiny_clip, image_folder,
                                                         tmp_path):
    out = str(tmp_path / "out")
    marian = str(tiny_marian)
    first = run_config(tiny_model, str(image_folder), out, languages=("en", "fr"), translate=(("fr", marian),),
                    clip_model=str(tiny_clip))
    pipeline.run(first)
    assert len(read_captions(out)) == GOOD * 2

    # Adding languages later computes only the missing (image, language) pairs, from the stored English.
    more = run_config(tiny_model, str(image_folder), out, languages=("en", "fr", "de", "es"),
                   translate=(("fr", marian), ("de", marian), ("es", marian)), clip_model=str(tiny_clip))
    summary = pipeline.run(more)
    assert summary.captions == GOOD * 2
    captions = read_captions(out)
    assert len(captions) == GOOD * 4
    for (uri, lang), row in captions.items():
        assert math.isfinite(row["score"]) and 0 <= row["clip_score"] <= 2.5
        if lang == "en":
            assert row["producer"] == "native" and row["source_lang"] is None
        else:
            assert row["producer"] == marian and row["source_lang"] == "en"
    from captioner.models import translation
    from captioner.models import loading as model
    translator = model.load_translator(ModelConfig(name=marian))
    uri = sorted(u for u, _ in captions)[0]
    expected = translation.translate(translator, [captions[(uri, "en")]["caption"]], "en", "de", GenerationConfig(max_new_tokens=6))
    assert captions[(uri, "de")]["caption"] == expected[0].text


def _scene_photos(folder, seed: int, one_shape_fraction: float):
    """Six scenes of the demo model's grammar as JPEGs in ``folder``."""
    from captioner.train import scenes

    folder.mkdir()
    for i, scene in enumerate(scenes.scenes(6, seed=seed, one_shape_fraction=one_shape_fraction)):
        scenes.render(scene, 128).save(folder / f"scene{i}.jpg")
    return folder


def test_demo_model_writes_each_language_natively(local_ray, tmp_path):
    """The bundled model, no flags: French, German and Spanish rows come from its own language tokens."""
    from captioner.train import grammar

    photos = _scene_photos(tmp_path / "scenes", seed=777, one_shape_fraction=1.0)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(photos)), output=out, languages=("en", "fr", "de", "es")))
    assert summary.captions == 24
    english_shapes = set().union(*grammar.vocabulary("en")[1].values())
    for (uri, lang), row in read_captions(out).items():
        assert row["producer"] == "native" and row["model"].endswith("demo_model")
        words = set(row["caption"].lower().split())
        own_shapes = set().union(*grammar.vocabulary(lang)[1].values())
        assert words & own_shapes, (lang, row["caption"])
        if lang != "en":
            assert not words & (english_shapes - own_shapes), (lang, row["caption"])  # "triangle" is French too


def _swapped_demo_model(folder):
    """The demo model with its <|en|> and <|fr|> tokens swapped: asked for French it writes English, as a chat model
    asked for French may."""
    import json
    import shutil

    from captioner.config import DEMO_MODEL

    shutil.copytree(DEMO_MODEL, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["<|en|>"], vocab["<|fr|>"] = vocab["<|fr|>"], vocab["<|en|>"]
    for token in tokenizer["added_tokens"]:
        token["content"] = {"<|en|>": "<|fr|>", "<|fr|>": "<|en|>"}.get(token["content"], token["content"])
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    return folder


def test_rows_that_read_as_another_language_are_counted_recorded_and_found(local_ray, tmp_path):
    from captioner import query
    from captioner.run.summary import format_summary
    from captioner.store import state

    photos = _scene_photos(tmp_path / "scenes", seed=778, one_shape_fraction=0.0)
    out = str(tmp_path / "out")
    summary = pipeline.run(RunConfig(input=InputConfig(str(photos)), output=out, languages=("en", "fr"),
                                     model=ModelConfig(name=str(_swapped_demo_model(tmp_path / "model")))))
    rows = read_captions(out)
    fr = {uri: row for (uri, lang), row in rows.items() if lang == "fr"}
    assert {row["detected_lang"] for row in fr.values()} <= {"en", None}
    wrong = {uri for uri, row in fr.items() if row["detected_lang"] == "en"}
    assert len(wrong) >= 4  # captions of two shapes: long enough to tell
    check = summary.language_check
    assert check["fr"] == {"captions": 6, "wrong_language": len(wrong), "not_identified": 6 - len(wrong)}
    assert f"fr: {len(wrong)} of 6 rows look like another language" in format_summary(summary)
    assert state.run_records(out)[0]["language_check"] == check == query.stats(out)["language_check"]
    found = query.select(out, query.Filter(lang=("fr",), wrong_language=True)).read_all()
    assert set(found["uri"].to_pylist()) == wrong and set(found["detected_lang"].to_pylist()) == {"en"}
