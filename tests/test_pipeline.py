"""End-to-end: the real job on real Ray, over a local folder and a real S3-protocol server."""

import math

import pyarrow.dataset as pads
import pytest
import ray

from captioner import pipeline, schema
from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig, StorageConfig
from conftest import BAD, GOOD, jpeg_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(s3_server):
    """One local Ray for the module; started after the S3 credentials are in the environment."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _config(tiny_model, input_uri, output, endpoint=None, **kwargs):
    return RunConfig(
        input=InputConfig(input_uri),
        output=output,
        model=ModelConfig(name=str(tiny_model)),
        generation=GenerationConfig(max_new_tokens=6),
        storage=StorageConfig(endpoint_url=endpoint),
        **kwargs,
    )


def _captions(output, filesystem=None):
    table = pads.dataset(output + "/captions", format="parquet", partitioning="hive", filesystem=filesystem).to_table()
    return {(r["uri"], r["lang"]): r for r in table.to_pylist()}


def _errors(output, filesystem=None):
    return pads.dataset(output + "/errors", format="parquet", filesystem=filesystem).to_table().to_pylist()


def test_local_folder(local_ray, tiny_model, image_folder, tmp_path):
    out = str(tmp_path / "out")
    summary = pipeline.run(_config(tiny_model, str(image_folder), out))
    assert (summary.listed, summary.captioned, summary.failed, summary.captions) == (GOOD + len(BAD), GOOD, len(BAD), GOOD)
    captions = _captions(out)
    assert len(captions) == GOOD
    for (uri, lang), row in captions.items():
        assert uri.startswith(str(image_folder)) and lang == "en"
        assert row["caption"] and math.isfinite(row["score"]) and row["width"] > 0
        assert row["model"] == str(tiny_model) and row["run_id"] == summary.run_id
    errors = {e["uri"].rsplit("/", 1)[1]: e["error_type"] for e in _errors(out)}
    assert errors == BAD
    assert (tmp_path / "out" / "runs" / summary.run_id / "run.json").exists()

    again = pipeline.run(_config(tiny_model, str(image_folder), out))
    assert (again.skipped, again.images) == (GOOD + len(BAD), 0)
    assert len(_captions(out)) == GOOD and len(_errors(out)) == len(BAD)

    fresh = str(tmp_path / "fresh")
    pipeline.run(_config(tiny_model, str(image_folder), fresh))
    assert {k: r["caption"] for k, r in _captions(fresh).items()} == {k: r["caption"] for k, r in captions.items()}


def test_s3_in_and_out(local_ray, tiny_model, s3, s3_server):
    fs, bucket = s3
    for i in range(5):
        fs.pipe(f"{bucket}/photos/{'sub/' if i % 2 else ''}img{i}.jpg", jpeg_bytes(i))
    fs.pipe(f"{bucket}/photos/broken.jpg", b"not an image")
    out = f"s3://{bucket}/captions-out"
    summary = pipeline.run(_config(tiny_model, f"s3://{bucket}/photos/", out, endpoint=s3_server,
                                   languages=("en",)))
    assert (summary.captioned, summary.failed) == (5, 1)
    captions = _captions(f"{bucket}/captions-out", fs)
    assert sorted(uri for uri, _ in captions) == sorted(
        f"s3://{bucket}/photos/{'sub/' if i % 2 else ''}img{i}.jpg" for i in range(5)
    )
    assert all(row["etag"] and row["size"] > 0 for row in captions.values())
    assert [e["error_type"] for e in _errors(f"{bucket}/captions-out", fs)] == ["not_an_image"]
    assert fs.exists(f"{bucket}/captions-out/runs/{summary.run_id}/manifest.parquet")


def test_language_the_model_cannot_write_is_refused_before_work(local_ray, tiny_model, image_folder, tmp_path):
    from captioner.config import ConfigError

    with pytest.raises(ConfigError, match="cannot write fr"):
        pipeline.run(_config(tiny_model, str(image_folder), str(tmp_path / "o"), languages=("en", "fr")))
    assert not (tmp_path / "o").exists()


def test_four_languages_by_translation_with_clip_scores(local_ray, tiny_model, tiny_marian, tiny_clip, image_folder,
                                                         tmp_path):
    out = str(tmp_path / "out")
    marian = str(tiny_marian)
    first = _config(tiny_model, str(image_folder), out, languages=("en", "fr"), translate=(("fr", marian),),
                    clip_model=str(tiny_clip))
    pipeline.run(first)
    assert len(_captions(out)) == GOOD * 2

    # Adding languages later computes only the missing (image, language) pairs, from the stored English.
    more = _config(tiny_model, str(image_folder), out, languages=("en", "fr", "de", "es"),
                   translate=(("fr", marian), ("de", marian), ("es", marian)), clip_model=str(tiny_clip))
    summary = pipeline.run(more)
    assert summary.captions == GOOD * 2
    captions = _captions(out)
    assert len(captions) == GOOD * 4
    for (uri, lang), row in captions.items():
        assert math.isfinite(row["score"]) and 0 <= row["clip_score"] <= 2.5
        if lang == "en":
            assert row["producer"] == "native" and row["source_lang"] is None
        else:
            assert row["producer"] == marian and row["source_lang"] == "en"
    from captioner import generate, model
    translator = model.load_translator(ModelConfig(name=marian))
    uri = sorted(u for u, _ in captions)[0]
    expected = generate.translate(translator, [captions[(uri, "en")]["caption"]], "de", GenerationConfig(max_new_tokens=6))
    assert captions[(uri, "de")]["caption"] == expected[0].text
