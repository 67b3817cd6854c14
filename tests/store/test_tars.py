"""Tar shards as input: members found by one streaming pass over the headers, read back by offset, and damage
reported as one row for the shard, on local disk and on a real local S3 server."""

import io
import json
import logging
import os
import tarfile
import tracemalloc

import pyarrow as pa
import pytest
from PIL import Image

from captioner import schema
from captioner.store import fs as storage
from captioner.store import tars
from conftest import jpeg_bytes

IMAGES = (".jpg", ".jpeg", ".png")


def webdataset(count: int) -> dict[str, bytes]:
    """What img2dataset writes: key.jpg (or .png) next to key.txt and key.json."""
    files = {}
    for i in range(count):
        key = f"{i:06d}"
        files[f"{key}.png" if i % 3 == 2 else f"{key}.jpg"] = jpeg_bytes(i, fmt="PNG" if i % 3 == 2 else "JPEG")
        files[f"{key}.txt"] = f"caption {i}".encode()
        files[f"{key}.json"] = json.dumps({"key": key, "caption": f"caption {i}"}).encode()
    return files


def tar_bytes(files: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT, odd_entries: bool = False) -> bytes:
    """A tar of ``files`` in order; ``odd_entries`` adds a directory, a symlink and a hard link named like images."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if odd_entries:
            folder = tarfile.TarInfo("folder.jpg")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if odd_entries:
            first = next(iter(files))
            for name, kind in (("link.jpg", tarfile.SYMTYPE), ("hard.png", tarfile.LNKTYPE)):
                link = tarfile.TarInfo(name)
                link.type, link.linkname = kind, first
                tar.addfile(link)
    return buf.getvalue()


def headers(data: bytes) -> list[tarfile.TarInfo]:
    """Every member of a good tar, read by tarfile's random-access mode."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


@pytest.fixture(params=["local", "s3"])
def put(request, tmp_path):
    """Stores bytes as a shard and returns (uri, options, etag as listing would record it)."""
    if request.param == "local":
        def store(name: str, data: bytes):
            path = tmp_path / "shards" / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            return str(path), None, storage.identity(str(path))[1]
    else:
        fs, bucket = request.getfixturevalue("s3")
        options = {"endpoint_url": request.getfixturevalue("s3_server")}

        def store(name: str, data: bytes):
            fs.pipe(f"{bucket}/shards/{name}", data)
            uri = f"s3://{bucket}/shards/{name}"
            return uri, options, storage.identity(uri, options)[1]
    return store


def expected(uri: str, etag: str | None, files: dict[str, bytes], data: bytes, upto: int | None = None) -> list:
    """(uri, size, etag, error) of the image members among the first ``upto`` entries, checking each offset."""
    rows = []
    for info in headers(data)[:upto]:
        if info.name.lower().endswith(IMAGES) and info.isreg():
            assert data[info.offset_data: info.offset_data + info.size] == files[info.name]
            rows.append((f"{uri}#{info.name}", info.size, etag, None))
    return rows


def identity(rows: list[dict]) -> list[tuple]:
    return [(r[schema.URI], r[schema.SIZE], r[schema.ETAG], r[schema.ERROR]) for r in rows]


def test_split_and_is_shard():
    assert tars.split("s3://b/shards/00001.tar#000123.jpg") == ("s3://b/shards/00001.tar", "000123.jpg")
    assert tars.split("/data/x#y.TAR#dir/a#b.tar#c.jpg") == ("/data/x#y.TAR", "dir/a#b.tar#c.jpg")
    with pytest.raises(ValueError, match="not a tar member"):
        tars.split("s3://b/photo.jpg#frag")
    assert tars.is_shard("s3://b/shards/00001.tar") and tars.is_shard("/data/00001.TAR")
    assert not tars.is_shard("s3://b/shards/00001.tar.gz")
    assert not tars.is_shard("s3://b/shards/00001.tar#inner.tar")
    assert not tars.is_shard("s3://b/photo.jpg")


def test_good_shard_lists_image_members_with_offsets(put):
    files = webdataset(7)
    data = tar_bytes(files)
    uri, options, etag = put("00000.tar", data)
    rows = list(tars.members(uri, etag, IMAGES, options))
    assert identity(rows) == expected(uri, etag, files, data)
    assert len(rows) == 7 and etag
    for row in rows:
        name = tars.split(row[schema.URI])[1]
        assert data[row[schema.OFFSET]: row[schema.OFFSET] + row[schema.SIZE]] == files[name]
    pa.Table.from_pylist(rows, schema=schema.MANIFEST)  # rows are manifest rows as they are
    texts = [r[schema.URI] for r in tars.members(uri, etag, (".TXT",), options)]
    assert texts == [f"{uri}#{i:06d}.txt" for i in range(7)]


ODD = ["dir/sub/key.jpg", "with space.jpg", "hash#tag.jpg", "many.dots.in.name.JPG", "UPPER.PNG", "x.tar#y.jpeg"]
LONG = {
    tarfile.USTAR_FORMAT: ["d" * 90 + "/" + "n" * 90 + ".jpg"],  # fits only in ustar's prefix + name fields
    tarfile.GNU_FORMAT: ["g" * 150 + ".jpg", "deep/" * 30 + "long.png"],  # GNU long-name headers
    tarfile.PAX_FORMAT: ["café/日本 #1.jpeg", "p" * 200 + ".png"],  # PAX headers carry unicode and long names
}


@pytest.mark.parametrize("fmt", LONG, ids=["ustar", "gnu", "pax"])
def test_odd_names_and_non_files(tmp_path, fmt):
    names = ODD + LONG[fmt]
    files = {name: jpeg_bytes(i, fmt="PNG" if name.lower().endswith(".png") else "JPEG")
             for i, name in enumerate(names)}
    files["notes.txt"] = b"not an image"
    data = tar_bytes(files, fmt=fmt, odd_entries=True)
    shard = tmp_path / "odd shard#1.tar"
    shard.write_bytes(data)
    rows = list(tars.members(str(shard), "e1", IMAGES))
    assert [tars.split(r[schema.URI]) for r in rows] == [(str(shard), name) for name in names]
    with tars.ShardReader(lambda uri: None) as reader:
        for row, name in zip(rows, names):
            assert reader.read(row[schema.URI], row[schema.OFFSET], row[schema.SIZE]) == files[name]


def test_every_member_reads_back_and_decodes(put):
    files = webdataset(12)
    data = tar_bytes(files)
    uri, options, etag = put("00001.tar", data)
    rows = list(tars.members(uri, etag, IMAGES, options))
    assert len(rows) == 12
    with tars.ShardReader(lambda shard: options) as reader:
        for row in rows:
            got = reader.read(row[schema.URI], row[schema.OFFSET], row[schema.SIZE])
            assert got == files[tars.split(row[schema.URI])[1]]
            with Image.open(io.BytesIO(got)) as image:
                image.load()
                assert image.size == (64, 48)


def test_s3_shard_is_listed_and_read_in_few_requests(s3, faulty_s3):
    fs, bucket = s3
    files = webdataset(40)
    fs.pipe(f"{bucket}/shards/00002.tar", tar_bytes(files))
    uri, options = f"s3://{bucket}/shards/00002.tar", {"endpoint_url": faulty_s3.url}
    rows = list(tars.members(uri, "e", IMAGES, options))
    assert len(rows) == 40 and faulty_s3.counts["passed"] <= 3, faulty_s3.counts
    faulty_s3.counts.clear()
    with tars.ShardReader(lambda shard: options) as reader:
        assert [reader.read(r[schema.URI], r[schema.OFFSET], r[schema.SIZE]) for r in rows] == [
            files[tars.split(r[schema.URI])[1]] for r in rows]
    assert faulty_s3.counts["passed"] <= 3, faulty_s3.counts  # one open file per shard, not a request per member


@pytest.mark.parametrize("fill", [b"\xde\xad\xbe\xef", b"\0\0\0\0"], ids=["garbage", "zeros"])
def test_corrupt_header_keeps_members_before_it(put, caplog, fill):
    """A bad checksum, or a zeroed header that looks like the end-of-archive marker yet has members after it."""
    files = webdataset(6)
    data = bytearray(tar_bytes(files))
    bad = headers(bytes(data))[7]  # 000002.png's .txt sibling comes after it
    data[bad.offset: bad.offset + tarfile.BLOCKSIZE] = fill * (tarfile.BLOCKSIZE // 4)
    uri, options, etag = put("00003.tar", bytes(data))
    with caplog.at_level(logging.WARNING, logger="captioner.store.tars"):
        rows = list(tars.members(uri, etag, IMAGES, options))
    assert identity(rows[:-1]) == expected(uri, etag, files, tar_bytes(files), upto=7)
    error = rows[-1]
    assert (error[schema.URI], error[schema.SIZE], error[schema.ETAG], error[schema.OFFSET]) == (uri, len(data), etag,
                                                                                                  None)
    assert error[schema.ERROR].startswith("corrupt tar after 7 members: ")
    assert f"at byte {bad.offset}" in error[schema.ERROR]
    assert "corrupt tar after 7 members" in caplog.text
    pa.Table.from_pylist(rows, schema=schema.MANIFEST)


# Where to cut a shard of six samples, and how many entries stay whole: inside the 4th image's bytes, right before
# its header, inside its header, and inside the padding after its bytes (the image itself is whole).
CUTS = {
    "in-data": (lambda m: m.offset_data + m.size // 2, 9),
    "at-header": (lambda m: m.offset, 9),
    "in-header": (lambda m: m.offset + 100, 9),
    "in-padding": (lambda m: m.offset_data + m.size + 1, 10),
}


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_shard_keeps_whole_members(put, cut):
    files = webdataset(6)
    good = tar_bytes(files)
    where, whole = CUTS[cut]
    member = headers(good)[9]
    assert member.name == "000003.jpg" and member.size % tarfile.BLOCKSIZE
    data = good[: where(member)]
    uri, options, etag = put("00004.tar", data)
    rows = list(tars.members(uri, etag, IMAGES, options))
    assert identity(rows[:-1]) == expected(uri, etag, files, good, upto=whole)
    assert rows[-1][schema.URI] == uri and rows[-1][schema.OFFSET] is None
    assert rows[-1][schema.ERROR].startswith(f"truncated tar after {whole} members: the file ends at byte {len(data)}")


def test_shard_without_end_marker_is_reported(tmp_path):
    files = webdataset(2)
    good = tar_bytes(files)
    end = headers(good)[-1]
    shard = tmp_path / "s.tar"
    shard.write_bytes(good[: end.offset_data + end.size + (-end.size % tarfile.BLOCKSIZE)])
    rows = list(tars.members(str(shard), None, IMAGES))
    assert len(rows) == 3 and rows[-1][schema.ERROR].startswith("truncated tar after 6 members")


@pytest.mark.parametrize("content", ["empty", "jpeg", "text", "gzip"])
def test_not_a_tar_is_one_error_row(put, content):
    data = {"empty": b"", "jpeg": jpeg_bytes(1), "text": b"just some words\n" * 100}.get(content)
    if content == "gzip":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("a.jpg")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        data = buf.getvalue()  # compressed: offsets could not be read by range, so not a shard
    uri, options, etag = put("00005.tar", data)
    rows = list(tars.members(uri, etag, IMAGES, options))
    assert [(r[schema.URI], r[schema.SIZE], r[schema.OFFSET]) for r in rows] == [(uri, len(data), None)]
    assert rows[0][schema.ERROR].startswith("not a tar file: ")


def test_empty_archive_lists_nothing(tmp_path):
    shard = tmp_path / "empty.tar"
    shard.write_bytes(tar_bytes({}))
    assert list(tars.members(str(shard), None, IMAGES)) == []


def test_listing_streams_without_holding_the_shard(tmp_path):
    files = {f"{i:06d}.jpg": os.urandom(4 * 2**20) for i in range(8)}
    shard = tmp_path / "big.tar"
    shard.write_bytes(tar_bytes(files))
    tracemalloc.start()
    try:
        rows = list(tars.members(str(shard), None, IMAGES))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) == 8 and peak < 2**20, peak  # a 32 MiB shard, well under one member's bytes at once


def test_reading_a_replaced_or_missing_shard_raises(put):
    files = webdataset(6)
    uri, options, etag = put("00006.tar", tar_bytes(files))
    last = list(tars.members(uri, etag, IMAGES, options))[-1]
    put("00006.tar", tar_bytes(dict(list(files.items())[:3])))  # a shorter shard under the same name
    with tars.ShardReader(lambda shard: options) as reader:
        with pytest.raises(ValueError, match="shard changed"):
            reader.read(last[schema.URI], last[schema.OFFSET], last[schema.SIZE])
        with pytest.raises(FileNotFoundError):
            reader.read(uri.replace("00006.tar", "missing.tar") + "#a.jpg", 0, 10)
    with pytest.raises(FileNotFoundError):
        list(tars.members(uri.replace("00006.tar", "missing.tar"), None, IMAGES, options))


def test_reader_keeps_few_files_open(tmp_path):
    shards = []
    for i in range(tars.MAX_OPEN + 2):
        files = webdataset(2)
        (tmp_path / f"{i}.tar").write_bytes(tar_bytes(files))
        shards.append((list(tars.members(str(tmp_path / f"{i}.tar"), None, IMAGES)), files))
    reader = tars.ShardReader(lambda shard: None)
    for rows, files in shards * 2:
        for row in rows:
            assert reader.read(row[schema.URI], row[schema.OFFSET], row[schema.SIZE]) == files[
                tars.split(row[schema.URI])[1]]
        assert len(reader._files) <= tars.MAX_OPEN
    reader.close()
    assert not reader._files
