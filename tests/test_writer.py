import pyarrow as pa
import pyarrow.dataset as pads

from captioner import schema, writer


def _images(uris, failed=()):
    rows = []
    for uri in uris:
        row = {"uri": uri, "size": 1, "etag": "e", "run_id": "r"}
        if uri in failed:
            row.update(error_type="empty", error="file is empty")
        else:
            row.update(width=4, height=3, model="m", model_revision=None,
                       results=[{"lang": "en", "caption": f"en {uri}", "score": -0.5, "producer": "native", "num_candidates": 1},
                                {"lang": "fr", "caption": f"fr {uri}", "score": -0.7, "producer": "native", "num_candidates": 1}])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT)


def test_shard_names_depend_only_on_the_images():
    assert writer.shard_name(["b", "a"]) == writer.shard_name(["a", "b"]) != writer.shard_name(["a"])


def test_shard_splits_languages_and_errors(tmp_path):
    counts = writer.write_shard(_images(["a", "b", "c"], failed={"c"}), str(tmp_path))
    assert counts == {"images": 3, "captioned": 2, "failed": 1, "captions": 4}
    captions = pads.dataset(tmp_path / "captions", format="parquet", partitioning="hive").to_table()
    assert sorted(zip(captions["uri"].to_pylist(), captions["lang"].to_pylist())) == [
        ("a", "en"), ("a", "fr"), ("b", "en"), ("b", "fr")
    ]
    row = captions.filter(pa.compute.equal(captions["lang"], "fr")).sort_by("uri").to_pylist()[0]
    assert row["caption"] == "fr a" and row["width"] == 4 and row["height"] == 3
    errors = pads.dataset(tmp_path / "errors", format="parquet").to_table()
    assert errors.select(["uri", "error_type"]).to_pylist() == [{"uri": "c", "error_type": "empty"}]
    assert errors.schema.metadata[b"captioner.schema_version"] == str(schema.SCHEMA_VERSION).encode()


def test_retried_write_replaces_its_own_files(tmp_path):
    batch = _images(["a", "b"])
    writer.write_shard(batch, str(tmp_path))
    writer.write_shard(batch, str(tmp_path))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(f.startswith("captions/lang=") for f in files)
    assert pads.dataset(tmp_path / "captions", format="parquet", partitioning="hive").count_rows() == 4
