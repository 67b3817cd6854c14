import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioner import manifest, schema
from captioner.config import DEFAULT_EXTENSIONS
from conftest import BAD, GOOD


def _done(rows):
    return pa.Table.from_pylist(rows, schema=schema.MANIFEST.append(pa.field(schema.LANG, pa.string())))


def test_folder_listing_filters_by_extension_case_insensitively(image_folder):
    table = manifest.build(str(image_folder), DEFAULT_EXTENSIONS)
    names = [u.rsplit("/", 1)[1] for u in table[schema.URI].to_pylist()]
    assert len(names) == GOOD + len(BAD) and "readme.txt" not in names and "wide.JPG" in names
    assert table[schema.URI].to_pylist() == sorted(table[schema.URI].to_pylist())
    assert table.schema == schema.MANIFEST


def test_manifest_files(tmp_path):
    uris = ["/data/a.jpg", "/data/b.jpg"]
    (tmp_path / "m.txt").write_text("# a comment\n/data/a.jpg\n\n/data/b.jpg\n")
    (tmp_path / "m.csv").write_text("uri,label\n/data/a.jpg,x\n/data/b.jpg,y\n")
    pq.write_table(pa.table({schema.URI: uris, schema.SIZE: [1, 2]}), tmp_path / "m.parquet")
    for name in ("m.txt", "m.csv", "m.parquet"):
        table = manifest.build(str(tmp_path / name), DEFAULT_EXTENSIONS)
        assert table[schema.URI].to_pylist() == uris, name
    assert manifest.build(str(tmp_path / "m.parquet"), DEFAULT_EXTENSIONS)[schema.SIZE].to_pylist() == [1, 2]


def test_manifest_without_uri_column_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("path\n/a.jpg\n")
    with pytest.raises(manifest.InputError, match="no 'uri' column"):
        manifest.build(str(tmp_path / "m.csv"), DEFAULT_EXTENSIONS)


def test_empty_input_is_an_error(tmp_path):
    (tmp_path / "x.txt").write_text("no images here")
    with pytest.raises(manifest.InputError, match="--extensions"):
        manifest.build(str(tmp_path), DEFAULT_EXTENSIONS)


def test_pending_subtracts_done_work_by_identity_and_language():
    listing = pa.Table.from_pylist(
        [
            {"uri": "a", "size": 1, "etag": "x"},  # en done: only fr missing
            {"uri": "b", "size": 2, "etag": "y2"},  # changed since its caption: everything again
            {"uri": "c", "size": 3, "etag": "z"},  # failed before: left alone
            {"uri": "d", "size": 4, "etag": "w"},  # new
            {"uri": "e", "size": 5, "etag": "v"},  # complete
        ],
        schema=schema.MANIFEST,
    )
    done = _done(
        [
            {"uri": "a", "size": 1, "etag": "x", "lang": "en"},
            {"uri": "b", "size": 2, "etag": "y1", "lang": "en"},
            {"uri": "c", "size": 3, "etag": "z", "lang": None},
            {"uri": "e", "size": 5, "etag": "v", "lang": "en"},
            {"uri": "e", "size": 5, "etag": "v", "lang": "fr"},
        ]
    )
    todo = manifest.pending(listing, done, ("en", "fr"))
    got = {row["uri"]: set(row["langs"].split(",")) for row in todo.to_pylist()}
    assert got == {"a": {"fr"}, "b": {"en", "fr"}, "d": {"en", "fr"}}


def test_pending_ignores_identity_a_manifest_file_left_out():
    listing = pa.Table.from_pylist([{"uri": "a"}, {"uri": "b"}], schema=schema.MANIFEST)
    done = _done([{"uri": "a", "size": 10, "etag": "mtime:1.0", "lang": "en"}])
    assert manifest.pending(listing, done, ("en",))[schema.URI].to_pylist() == ["b"]


def test_done_keys_reads_captions_and_errors(tmp_path):
    from captioner import writer

    images = pa.Table.from_pylist(
        [
            {"uri": "a", "size": 1, "etag": "x", "run_id": "r", "width": 1, "height": 1, "model": "m",
             "results": [{"lang": "en", "caption": "c", "score": -1.0, "producer": "native", "num_candidates": 1}, {"lang": "fr", "caption": "c", "score": -1.0, "producer": "native", "num_candidates": 1}]},
            {"uri": "b", "size": 2, "etag": "y", "run_id": "r", "error_type": "empty", "error": "0 bytes"},
        ],
        schema=schema.IMAGE_RESULT,
    )
    writer.write_shard(images, str(tmp_path))
    done = manifest.done_keys(str(tmp_path)).sort_by([("uri", "ascending"), ("lang", "ascending")])
    assert done.to_pylist() == [
        {"uri": "a", "size": 1, "etag": "x", "lang": "en"},
        {"uri": "a", "size": 1, "etag": "x", "lang": "fr"},
        {"uri": "b", "size": 2, "etag": "y", "lang": None},
    ]
    assert manifest.done_keys(str(tmp_path / "empty")).num_rows == 0
