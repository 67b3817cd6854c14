import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from captioner import schema
from captioner.store import manifest
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


def _failed(rows):
    return pa.Table.from_pylist(rows, schema=schema.MANIFEST.append(pa.field(schema.ERROR_TYPE, pa.string()))
                                .append(pa.field(schema.ATTEMPT, pa.int32())))


NO_FAILURES = _failed([])


def test_pending_subtracts_done_work_by_identity_and_language():
    listing = pa.Table.from_pylist(
        [
            {"uri": "a", "size": 1, "etag": "x"},  # en done: only fr missing
            {"uri": "b", "size": 2, "etag": "y2"},  # changed since its caption: everything again
            {"uri": "d", "size": 4, "etag": "w"},  # new
            {"uri": "e", "size": 5, "etag": "v"},  # complete
        ],
        schema=schema.MANIFEST,
    )
    captioned = _done(
        [
            {"uri": "a", "size": 1, "etag": "x", "lang": "en"},
            {"uri": "b", "size": 2, "etag": "y1", "lang": "en"},
            {"uri": "e", "size": 5, "etag": "v", "lang": "en"},
            {"uri": "e", "size": 5, "etag": "v", "lang": "fr"},
        ]
    )
    todo = manifest.pending(listing, captioned, NO_FAILURES, ("en", "fr"))
    got = {row["uri"]: set(row["langs"].split(",")) for row in todo.to_pylist()}
    assert got == {"a": {"fr"}, "b": {"en", "fr"}, "d": {"en", "fr"}}
    assert set(todo["attempt"].to_pylist()) == {0}


def test_failed_images_are_retried_only_when_worth_it():
    listing = pa.Table.from_pylist([{"uri": u, "size": 1, "etag": "x"} for u in "pqrs"], schema=schema.MANIFEST)
    failed = _failed([
        {"uri": "p", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 1},  # permanent
        {"uri": "q", "size": 1, "etag": "x", "error_type": "read_error", "attempt": 1},  # the store: retried
        {"uri": "r", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 1},  # ...later captioned
        {"uri": "s", "size": 1, "etag": "x", "error_type": "read_error", "attempt": 1},
        {"uri": "s", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 2},  # latest attempt counts
    ])
    captioned = _done([{"uri": "r", "size": 1, "etag": "x", "lang": "en"}])
    todo = manifest.pending(listing, captioned, failed, ("en",))
    assert {r["uri"]: r["attempt"] for r in todo.to_pylist()} == {"q": 1}
    todo = manifest.pending(listing, captioned, failed, ("en",), retry_errors=True)
    assert {r["uri"]: r["attempt"] for r in todo.to_pylist()} == {"p": 1, "q": 1, "s": 2}


def test_pending_ignores_identity_a_manifest_file_left_out():
    listing = pa.Table.from_pylist([{"uri": "a"}, {"uri": "b"}], schema=schema.MANIFEST)
    captioned = _done([{"uri": "a", "size": 10, "etag": "mtime:1.0", "lang": "en"}])
    assert manifest.pending(listing, captioned, NO_FAILURES, ("en",))[schema.URI].to_pylist() == ["b"]


def test_source_captions_come_from_the_stored_rows(tmp_path):
    from captioner.store import state, writer
    from results import image_results

    writer.write_shard(image_results(["a", "b"], langs=("en",)), str(tmp_path))
    captions = state.captions(str(tmp_path), state.committed(str(tmp_path)))
    todo = pa.Table.from_pylist([{"uri": "a", "size": 1, "etag": "e", "langs": "fr"},
                                 {"uri": "c", "size": 1, "etag": "e", "langs": "en,fr"}])
    joined = manifest.with_source_captions(todo, captions, "en")
    assert dict(zip(joined["uri"].to_pylist(), joined["source_caption"].to_pylist())) == {"a": "en a", "c": None}


def _video_captions(rows):
    fields = [*schema.MANIFEST, pa.field(schema.LANG, pa.string()), pa.field(schema.SEGMENT, pa.int32()),
              pa.field(schema.SEGMENTS, pa.int32())]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def _video_errors(rows):
    fields = [*schema.MANIFEST, pa.field(schema.ERROR_TYPE, pa.string()), pa.field(schema.ATTEMPT, pa.int32()),
              pa.field(schema.SEGMENT, pa.int32())]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def test_a_video_is_done_once_each_segment_is_captioned_or_failed_for_good():
    listing = pa.Table.from_pylist([{"uri": "v.mp4", "size": 9, "etag": "e"}], schema=schema.MANIFEST)
    captioned = _video_captions([{"uri": "v.mp4", "size": 9, "etag": "e", "lang": "en", "segment": k, "segments": 3}
                                 for k in (0, 2)])
    lost = _video_errors([{"uri": "v.mp4", "size": 9, "etag": "e", "error_type": "truncated", "attempt": 1,
                           "segment": 1}])
    assert manifest.pending(listing, captioned, lost, ("en",)).num_rows == 0
    assert manifest.pending(listing, captioned, lost, ("en",), retry_errors=True)[schema.LANGS].to_pylist() == ["en"]
    flaky = lost.set_column(3, schema.ERROR_TYPE, pa.array(["read_error"]))  # a store failure: tried again
    assert manifest.pending(listing, captioned, flaky, ("en",))[schema.LANGS].to_pylist() == ["en"]
    assert manifest.pending(listing, captioned, _video_errors([]), ("en", "fr"))[schema.LANGS].to_pylist() == ["en,fr"]


def test_a_partly_done_video_carries_what_is_stored_of_it_and_a_replaced_one_nothing(tmp_path):
    import json

    from captioner.store import state, writer
    from results import image_results

    writer.write_shard(image_results([], videos={"v.mp4": 3}, langs=("en",)), str(tmp_path))
    captions = state.captions(str(tmp_path), state.committed(str(tmp_path)))
    todo = pa.Table.from_pylist([{"uri": "v.mp4", "size": 1, "etag": "e", "langs": "en,fr", "attempt": 0},
                                 {"uri": "v.mp4", "size": 2, "etag": "new", "langs": "en", "attempt": 0}])
    lost = _video_errors([{"uri": "v.mp4", "size": 1, "etag": "e", "error_type": "truncated", "attempt": 1,
                           "segment": 2}])
    stored = manifest.with_stored_segments(todo, captions, lost, retry_errors=False)[schema.STORED].to_pylist()
    first = json.loads(stored[0])
    assert sorted(first["captions"]) == ["0", "1", "2"] and first["captions"]["1"] == {"en": "en v.mp4"}
    assert first["failed"] == [2]
    assert stored[1] is None  # another size and etag: the same key holds a new video
