import gzip
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioner import schema
from captioner.config import DEFAULT_EXTENSIONS
from captioner.store import manifest
from conftest import BAD, GOOD, jpeg_bytes


def _frozen(uri, dest, options=None) -> pa.Table:
    rows = manifest.freeze(uri, DEFAULT_EXTENSIONS, options, str(dest))
    table = manifest.dataset(str(dest)).to_table().sort_by(schema.URI)
    assert table.num_rows == rows and table.schema == schema.MANIFEST
    return table


def test_folder_listing_filters_by_extension_case_insensitively(image_folder, tmp_path):
    table = _frozen(str(image_folder), tmp_path / "m")
    names = [u.rsplit("/", 1)[1] for u in table[schema.URI].to_pylist()]
    assert len(names) == GOOD + len(BAD) and "readme.txt" not in names and "wide.JPG" in names


def test_manifest_files_of_every_kind(tmp_path):
    uris = ["/data/a.jpg", "/data/b.jpg"]
    (tmp_path / "m.txt").write_text("# a comment\n/data/a.jpg\n\n/data/b.jpg\n")
    (tmp_path / "m.csv").write_text("uri,label\n/data/a.jpg,x\n/data/b.jpg,y\n")
    (tmp_path / "m.csv.gz").write_bytes(gzip.compress(b"uri,etag\n/data/a.jpg,0123\n/data/b.jpg,9\n"))
    pq.write_table(pa.table({schema.URI: uris, schema.SIZE: [1, 2]}), tmp_path / "m.parquet")
    for name in ("m.txt", "m.csv", "m.csv.gz", "m.parquet"):
        assert _frozen(str(tmp_path / name), tmp_path / f"out-{name}")[schema.URI].to_pylist() == uris, name
    assert _frozen(str(tmp_path / "m.parquet"), tmp_path / "p")[schema.SIZE].to_pylist() == [1, 2]
    assert _frozen(str(tmp_path / "m.csv.gz"), tmp_path / "g")[schema.ETAG].to_pylist() == ["0123", "9"]


def test_a_big_manifest_streams_into_parts_and_a_glob_of_parts_reads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "BATCH_ROWS", 7)
    monkeypatch.setattr(manifest, "PART_ROWS", 20)
    uris = [f"s3://b/{i:04d}.jpg" for i in range(95)]
    (tmp_path / "m.txt").write_text("".join(f"{u}\n" for u in uris))
    first = _frozen(str(tmp_path / "m.txt"), tmp_path / "run1")
    assert sorted(p.name for p in (tmp_path / "run1").iterdir()) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert first[schema.URI].to_pylist() == uris
    again = _frozen(str(tmp_path / "run1" / "*.parquet"), tmp_path / "run2")  # a frozen manifest as input
    assert again.equals(first)


def test_a_folder_whose_name_looks_like_a_pattern_is_a_folder(tmp_path):
    folder = tmp_path / "photos [2020]"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"1")
    assert _frozen(str(folder), tmp_path / "m")[schema.URI].to_pylist() == [str(folder / "a.jpg")]


def test_manifest_without_uri_column_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("path\n/a.jpg\n")
    with pytest.raises(manifest.InputError, match="no 'uri' column"):
        _frozen(str(tmp_path / "m.csv"), tmp_path / "out")


def test_empty_input_and_empty_glob_are_errors(tmp_path):
    (tmp_path / "x.txt").write_text("no images here")
    with pytest.raises(manifest.InputError, match="--extensions"):
        _frozen(str(tmp_path), tmp_path / "out")
    with pytest.raises(manifest.InputError, match="no file matches"):
        _frozen(str(tmp_path / "*.parquet"), tmp_path / "out")


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_shards_in_a_folder_become_their_image_members(tmp_path):
    root = tmp_path / "shards"
    root.mkdir()
    (root / "00000.tar").write_bytes(_tar({"k1.jpg": jpeg_bytes(1), "k1.txt": b"a cat", "k1.json": b"{}",
                                           "odd name #2.PNG": jpeg_bytes(2, fmt="PNG")}))
    (root / "00001.tar").write_bytes(_tar({"k3.jpg": jpeg_bytes(3)})[:700])  # cut inside its only image
    (root / "loose.jpg").write_bytes(jpeg_bytes(4))
    table = _frozen(str(root), tmp_path / "m")
    rows = {r[schema.URI].removeprefix(str(root) + "/"): r for r in table.to_pylist()}
    assert sorted(rows) == ["00000.tar#k1.jpg", "00000.tar#odd name #2.PNG", "00001.tar", "loose.jpg"]
    assert rows["00000.tar#k1.jpg"][schema.SIZE] == len(jpeg_bytes(1)) and rows["00000.tar#k1.jpg"][schema.OFFSET]
    assert rows["00001.tar"][schema.ERROR] and rows["00001.tar"][schema.OFFSET] is None
    assert rows["loose.jpg"][schema.OFFSET] is None and rows["loose.jpg"][schema.ERROR] is None


def test_an_s3_inventory_is_an_input(s3, s3_server, tmp_path):
    fs, bucket = s3
    fs.pipe({f"{bucket}/photos/a.jpg": b"a" * 10, f"{bucket}/photos/b.txt": b"b"})
    data = gzip.compress(f'"{bucket}","photos/a.jpg","10","abc"\n"{bucket}","photos/b.txt","1","def"\n'.encode())
    fs.pipe(f"{bucket}/inv/data/1.csv.gz", data)
    fs.pipe(f"{bucket}/inv/2024-06-01T01-00Z/manifest.json", json.dumps({
        "sourceBucket": bucket, "destinationBucket": f"arn:aws:s3:::{bucket}", "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, ETag", "files": [{"key": "inv/data/1.csv.gz"}]}).encode())
    table = _frozen(f"s3://{bucket}/inv/2024-06-01T01-00Z/manifest.json", tmp_path / "m", {"endpoint_url": s3_server})
    assert table.select(list(schema.IDENTITY)).to_pylist() == [
        {"uri": f"s3://{bucket}/photos/a.jpg", "size": 10, "etag": "abc"}]
