from captioner import query, writer
from test_writer import image_results


def test_sample_returns_rows_of_a_run_or_any(tmp_path):
    writer.write_shard(image_results(["b", "a"], run_id="r1", langs=("en",)), str(tmp_path))
    writer.write_shard(image_results(["c"], run_id="r2", langs=("en",)), str(tmp_path))
    sample = query.sample(str(tmp_path), limit=5, run_id="r1")
    assert [r["uri"] for r in sample] == ["a", "b"] and sample[0]["caption"] == "en a"
    assert [r["uri"] for r in query.sample(str(tmp_path), limit=2)] == ["a", "b"]
    assert query.sample(str(tmp_path / "nothing"), limit=5) == []


def test_stats_add_up_markers_and_runs(tmp_path):
    writer.write_shard(image_results(["a", "b", "c"], failed={"c": "truncated"}), str(tmp_path))
    stats = query.stats(str(tmp_path))
    assert (stats["images_processed"], stats["captioned"], stats["failed"]) == (3, 2, 1)
    assert stats["captions_per_language"] == {"en": 2, "fr": 2}
    assert stats["errors_by_type"] == {"truncated": 1} and stats["fingerprints"] == ["en:f", "fr:f"]
