import json

import pyarrow as pa
import pyarrow.dataset as pads

from captioner import schema
from captioner.store import state, writer
from results import image_results


def test_shard_names_depend_on_the_run_and_the_images():
    assert writer.shard_name("r", ["b", "a"]) == writer.shard_name("r", ["a", "b"])
    assert len({writer.shard_name("r", ["a"]), writer.shard_name("r", ["a", "b"]), writer.shard_name("s", ["a"])}) == 3


def test_shard_splits_languages_and_errors_then_commits(tmp_path):
    counts = writer.write_shard(image_results(["a", "b", "c"], failed={"c": "empty"}), str(tmp_path))
    assert counts == {"images": 3, "captioned": 2, "failed": 1, "segments": 0, "failed_segments": 0,
                      "captions": 4, "empty_captions": 0}
    captions = pads.dataset(tmp_path / "captions", format="parquet", partitioning="hive").to_table()
    assert sorted(zip(captions["uri"].to_pylist(), captions["lang"].to_pylist())) == [
        ("a", "en"), ("a", "fr"), ("b", "en"), ("b", "fr")
    ]
    row = captions.filter(pa.compute.equal(captions["lang"], "fr")).sort_by("uri").to_pylist()[0]
    assert row["caption"] == "fr a" and row["width"] == 4 and row["fingerprint"] == "f"
    errors = pads.dataset(tmp_path / "errors", format="parquet").to_table()
    assert errors.select(["uri", "error_type", "attempt"]).to_pylist() == [{"uri": "c", "error_type": "empty", "attempt": 1}]
    assert errors.schema.metadata[b"captioner.schema_version"] == str(schema.SCHEMA_VERSION).encode()
    (marker,) = (tmp_path / "_commits").iterdir()
    record = json.loads(marker.read_text())
    assert record["counts"] == counts and record["errors_by_type"] == {"empty": 1}
    assert record["fingerprints"] == {"en": "f", "fr": "f"}
    assert sorted(record["files"]) == sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")
    )


def test_retried_write_replaces_its_own_files(tmp_path):
    batch = image_results(["a", "b"])
    writer.write_shard(batch, str(tmp_path))
    writer.write_shard(batch, str(tmp_path))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 3 and files[0].startswith("_commits/")
    assert state.captions(str(tmp_path), state.committed(str(tmp_path))).count_rows() == 4


def test_shard_names_are_hashes_that_no_uri_can_collide():
    import re

    from captioner.store.writer import shard_name

    hostile = ["s3://b/../../etc/passwd", "/abs/x.jpg", "s3://b/a\ns3://b/c", "ü" * 300]
    assert all(re.fullmatch(r"part-[0-9a-f]{24}\.parquet", shard_name("r", [u])) for u in hostile)
    assert shard_name("r", ["s3://b/a\ns3://b/c"]) != shard_name("r", ["s3://b/a", "s3://b/c"])


def test_empty_captions_are_kept_as_rows_and_counted(tmp_path):
    """A model that ends a caption at once wrote something: a row with caption '', counted for the summary."""
    counts = writer.write_shard(image_results(["a", "b"], empty={"b"}), str(tmp_path))
    assert (counts["captions"], counts["empty_captions"]) == (4, 2)
    captions = pads.dataset(tmp_path / "captions", format="parquet", partitioning="hive").to_table()
    assert sorted(r["uri"] for r in captions.to_pylist() if r["caption"] == "") == ["b", "b"]
