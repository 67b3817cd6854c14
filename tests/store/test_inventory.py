"""S3 Inventory reports as input: real objects on the local S3 server, and reports written as AWS writes them (gzipped
headerless CSV with URL-encoded keys, or Parquet), in the destination bucket or copied to a local disk."""

import gzip
import hashlib
import io
import json
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioner import schema
from captioner.store import inventory, listing

IMAGES = (".jpg", ".jpeg", ".png")
REPORT = "inv/{source}/daily"  # <prefix>/<source-bucket>/<config-ID> in the destination bucket
STAMP = "2024-06-01T01-00Z"
CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass"
PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
                  "optional binary version_id (STRING); optional boolean is_latest; optional boolean is_delete_marker; "
                  "optional int64 size; optional binary e_tag (STRING); }")
# Objects put in the source bucket; each becomes the latest version's row of the report.
OBJECTS = {
    "photos/a.jpg": b"a" * 10,
    "photos/with space.JPG": b"b" * 20,
    "photos/ünïcode+plus é.png": b"c" * 30,
    "photos/nested/d.jpeg": b"d" * 40,
    "photos/notes.txt": b"not an image",
    "photos/": b"",  # a folder placeholder, as the console makes
}


@pytest.fixture
def source(s3, s3_server):
    """The source bucket holding OBJECTS, the S3 options, and the rows a report of that bucket holds."""
    fs, bucket = s3
    for key, data in OBJECTS.items():
        fs.pipe_file(f"{bucket}/{key}", data)
    rows = [row(bucket, key, "v2", len(data), hashlib.md5(data).hexdigest())  # as S3 tags one-part objects
            for key, data in OBJECTS.items()]
    rows[0]["e_tag"] = f'"{rows[0]["e_tag"]}"'  # an ETag quoted as the S3 API quotes it must come out bare
    older = row(bucket, rows[1]["key"], "v1", 5, "0" * 32, latest=False)  # a replaced version
    gone = [row(bucket, "photos/gone.jpg", "v3", None, None, deleted=True),  # a delete marker over an older version
            row(bucket, "photos/gone.jpg", "v1", 7, "1" * 32, latest=False)]
    return bucket, {"endpoint_url": s3_server}, [*rows[:3], older, *gone, *rows[3:]]


def row(bucket: str, key: str, version: str, size: int | None, etag: str | None, latest: bool = True,
        deleted: bool = False) -> dict:
    """One report row, named as the Parquet report names its columns."""
    return {"bucket": bucket, "key": key, "version_id": version, "is_latest": latest, "is_delete_marker": deleted,
            "size": size, "e_tag": etag}


def expected(bucket: str, options: dict, extensions: tuple[str, ...] = IMAGES) -> set[tuple]:
    """What listing the source bucket finds: what a user expects the inventory to give."""
    return {row for page in listing.pages(f"s3://{bucket}/", options) for row in page
            if row[0].lower().endswith(extensions)}


def csv_file(rows: list[dict]) -> bytes:
    """A gzipped CSV data file as AWS writes it: no header, every field quoted, keys URL-encoded."""
    def field(value) -> str:
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return '"' + text.replace('"', '""') + '"'

    lines = [",".join(field(v) for v in (r["bucket"], urllib.parse.quote_plus(r["key"]), r["version_id"],
                                         r["is_latest"], r["is_delete_marker"], r["size"], "2024-05-31T10:00:00.000Z",
                                         r["e_tag"], "STANDARD")) for r in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def parquet_file(rows: list[dict]) -> bytes:
    table = pa.Table.from_pylist(rows, pa.schema([
        ("bucket", pa.string()), ("key", pa.string()), ("version_id", pa.string()), ("is_latest", pa.bool_()),
        ("is_delete_marker", pa.bool_()), ("size", pa.int64()), ("e_tag", pa.string())]))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=3)
    return buf.getvalue()


def report(source_bucket: str, destination: str, rows: list[dict], fmt: str = "CSV", **changes) -> dict[str, bytes]:
    """The files of one report, keyed by their key in the destination bucket: rows split over two data files."""
    root = REPORT.format(source=source_bucket)
    ext, write = {"CSV": (".csv.gz", csv_file), "Parquet": (".parquet", parquet_file)}[fmt]
    halves = {f"{root}/data/part-{i}{ext}": write(part) for i, part in enumerate((rows[:4], rows[4:]))}
    manifest = {
        "sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{destination}", "version": "2016-11-30",
        "creationTimestamp": "1717203600000", "fileFormat": fmt,
        "fileSchema": CSV_SCHEMA if fmt == "CSV" else PARQUET_SCHEMA,
        "files": [{"key": key, "size": len(data), "MD5checksum": "0" * 32} for key, data in halves.items()],
        **changes,
    }
    return {f"{root}/{STAMP}/manifest.json": json.dumps(manifest).encode(), **halves}


def put_in_bucket(s3, files: dict[str, bytes]) -> str:
    """Write the report into a destination bucket of its own; the manifest's URI."""
    fs, _ = s3
    for key, data in files.items():
        fs.pipe_file(key, data)
    return "s3://" + next(key for key in files if key.endswith("manifest.json"))


def on_disk(tmp_path: Path, files: dict[str, bytes], keep: int = 2) -> str:
    """The report copied to a local disk from its config-ID folder down (the last ``keep`` parts of each key)."""
    for key, data in files.items():
        path = tmp_path.joinpath(*key.split("/")[-keep:])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(tmp_path / STAMP / "manifest.json")


def listed(uri: str, options: dict | None, extensions: tuple[str, ...] = IMAGES, rows: int = 100_000) -> set[tuple]:
    table = pa.Table.from_batches(list(inventory.batches(uri, extensions, options, rows)), schema.MANIFEST)
    assert table.column(schema.OFFSET).null_count == table.column(schema.ERROR).null_count == table.num_rows
    return set(zip(*(table.column(name).to_pylist() for name in schema.IDENTITY)))


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_report_in_destination_bucket_lists_latest_live_images(s3, source, fmt):
    bucket, options, rows = source
    destination = f"{bucket}-inventory"
    s3[0].mkdir(destination)
    files = report(bucket, destination, rows, fmt)
    uri = put_in_bucket(s3, {f"{destination}/{key}": data for key, data in files.items()})
    got = listed(uri, options)
    assert got == expected(bucket, options)
    assert {uri for uri, _, _ in got} == {f"s3://{bucket}/{key}" for key in (
        "photos/a.jpg", "photos/with space.JPG", "photos/ünïcode+plus é.png", "photos/nested/d.jpeg")}
    assert all(len(etag) == 32 and '"' not in etag for _, _, etag in got)
    assert listed(uri, options, (".PNG",)) == {(f"s3://{bucket}/photos/ünïcode+plus é.png", 30, etag)
                                               for u, _, etag in got if u.endswith(".png")}


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_report_copied_to_local_disk(tmp_path, source, fmt):
    bucket, options, rows = source
    files = report(bucket, "somewhere-else", rows, fmt)
    assert listed(on_disk(tmp_path, files), None) == expected(bucket, options)


def test_batches_are_bounded_by_rows(tmp_path, source):
    bucket, _, rows = source
    many = [{**rows[0], "key": f"photos/many/{i:03d}.jpg"} for i in range(25)]
    out = list(inventory.batches(on_disk(tmp_path, report(bucket, "d", many + rows)), IMAGES, rows=4))
    assert [b.num_rows for b in out] == [4] * 7 + [1]  # 25 + 4 images, in full batches however the files split
    assert all(b.schema == schema.MANIFEST for b in out)


def test_is_inventory():
    assert inventory.is_inventory("s3://dest/inv/src/daily/2024-06-01T01-00Z/manifest.json")
    assert inventory.is_inventory("/data/report/2024-06-01T01-00Z/manifest.json")
    assert not inventory.is_inventory("s3://dest/inv/src/daily/data/part-0.csv.gz")
    assert not inventory.is_inventory("s3://bucket/photos/")
    assert not inventory.is_inventory("/data/list.csv")


@pytest.mark.parametrize("changes, message", [
    ({"fileFormat": "ORC"}, "fileFormat 'ORC'; supported: CSV, Parquet"),
    ({"files": None}, "files must be a list"),
    ({"fileSchema": "Bucket, Size"}, "names no Key field"),
])
def test_malformed_manifests_say_what_is_wrong(tmp_path, changes, message):
    files = report("src", "dest", [], **changes)
    with pytest.raises(inventory.InventoryError, match=message):
        list(inventory.batches(on_disk(tmp_path, files), IMAGES))


def test_manifest_without_files_or_not_json(tmp_path):
    manifest = tmp_path / STAMP / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"sourceBucket": "src", "destinationBucket": "arn:aws:s3:::dest",
                                    "fileFormat": "CSV", "fileSchema": CSV_SCHEMA}))
    with pytest.raises(inventory.InventoryError, match="lacks files; pass the manifest.json of an S3 Inventory"):
        list(inventory.batches(str(manifest), IMAGES))
    manifest.write_text('{"sourceBucket": "src", ')
    with pytest.raises(inventory.InventoryError, match="is not valid JSON"):
        list(inventory.batches(str(manifest), IMAGES))
    with pytest.raises(inventory.InventoryError, match="does not exist"):
        list(inventory.batches(str(tmp_path / "manifest.json"), IMAGES))


def test_data_file_missing_says_where_it_was_looked_for(tmp_path, source):
    bucket, _, rows = source
    files = report(bucket, "d", rows)
    manifest = on_disk(tmp_path, {k: v for k, v in files.items() if not k.endswith("part-1.csv.gz")})
    with pytest.raises(inventory.InventoryError, match=r"data/part-1.csv.gz does not exist; a local manifest.json"):
        list(inventory.batches(manifest, IMAGES))
