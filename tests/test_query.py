import pyarrow as pa

from captioner import query, schema, writer


def test_sample_returns_rows_of_a_run_or_any(tmp_path):
    rows = []
    for uri, run in (("b", "r1"), ("a", "r1"), ("c", "r2")):
        rows.append({"uri": uri, "size": 1, "etag": "e", "run_id": run, "width": 1, "height": 1, "model": "m",
                     "results": [{"lang": "en", "caption": f"cap {uri}", "score": -1.0, "producer": "native", "num_candidates": 1}]})
    writer.write_shard(pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT), str(tmp_path))
    sample = query.sample(str(tmp_path), limit=5, run_id="r1")
    assert [r["uri"] for r in sample] == ["a", "b"] and sample[0]["caption"] == "cap a"
    assert [r["uri"] for r in query.sample(str(tmp_path), limit=2)] == ["a", "b"]
    assert query.sample(str(tmp_path / "nothing"), limit=5) == []
