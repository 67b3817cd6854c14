import pyarrow as pa

from captioner import storage


def test_walk_files_sorted_with_identity(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.jpg").write_bytes(b"12345")
    (tmp_path / "a.jpg").write_bytes(b"1")
    rows = list(storage.walk_files(str(tmp_path)))
    assert [r[0] for r in rows] == [str(tmp_path / "a.jpg"), str(tmp_path / "b" / "z.jpg")]
    assert rows[1][1] == 5
    assert all(r[2].startswith("mtime:") for r in rows)


def test_missing_input_says_what_to_check(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="check the path"):
        list(storage.walk_files(str(tmp_path / "nope")))


def test_atomic_write_leaves_only_the_file(tmp_path):
    target = tmp_path / "deep" / "x.parquet"
    storage.write_parquet_atomic(str(target), pa.table({"a": [1, 2]}))
    storage.write_parquet_atomic(str(target), pa.table({"a": [3]}))  # replaced, not appended
    assert [p.name for p in target.parent.iterdir()] == ["x.parquet"]
    assert storage.read_bytes(str(target))[:4] == b"PAR1"


def test_s3_listing_reading_and_writing(s3, s3_server):
    fs, bucket = s3
    fs.pipe(f"{bucket}/photos/one.jpg", b"abc")
    fs.pipe(f"{bucket}/photos/sub/two.jpg", b"defg")
    opts = {"endpoint_url": s3_server}
    rows = list(storage.walk_files(f"s3://{bucket}/photos/", opts))
    assert [(r[0], r[1]) for r in rows] == [(f"s3://{bucket}/photos/one.jpg", 3), (f"s3://{bucket}/photos/sub/two.jpg", 4)]
    assert all(r[2] and not r[2].startswith("mtime:") for r in rows)  # real ETags
    assert storage.read_bytes(rows[1][0], opts) == b"defg"
    storage.write_bytes_atomic(f"s3://{bucket}/out/x.bin", b"xyz", opts)
    assert fs.cat(f"{bucket}/out/x.bin") == b"xyz"


def test_redact_drops_credentials_and_signatures():
    assert storage.redact("https://user:secret@host/a.jpg?X-Amz-Signature=abc") == "https://host/a.jpg"
    assert storage.redact("s3://bucket/key.jpg") == "s3://bucket/key.jpg"
    assert storage.redact("/local/with?odd.jpg") == "/local/with?odd.jpg"
