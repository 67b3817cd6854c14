import json

import pyarrow as pa

from captioner import schema
from captioner.store import state, todo, writer
from results import image_results, mixed_output

CAPTIONS = pa.schema([*schema.MANIFEST][:3] + [
    pa.field(schema.LANG, pa.string()), pa.field(schema.SEGMENT, pa.int32()), pa.field(schema.SEGMENTS, pa.int32()),
    pa.field(schema.CAPTION, pa.string()), pa.field(schema.RUN_ID, pa.string())])
ERRORS = pa.schema([*schema.MANIFEST][:3] + [
    pa.field(schema.SEGMENT, pa.int32()), pa.field(schema.ERROR_TYPE, pa.string()),
    pa.field(schema.ATTEMPT, pa.int32())])
NO_FAILURES = pa.Table.from_pylist([], schema=ERRORS)


def _listing(rows):
    return pa.Table.from_pylist(rows, schema=schema.MANIFEST)


def _captions(rows):
    return pa.Table.from_pylist([{schema.CAPTION: "c", schema.RUN_ID: "r", **row} for row in rows], schema=CAPTIONS)


def _errors(rows):
    return pa.Table.from_pylist(rows, schema=ERRORS)


def _plan(listing, captions, errors, languages, **options) -> pa.Table:
    with todo.Todo(listing, captions, errors, languages, **options) as plan:
        table = plan.table()
        assert plan.rows == table.num_rows
        return table


def test_subtracts_done_work_by_identity_and_language():
    listing = _listing([
        {"uri": "d", "size": 4, "etag": "w"},  # new
        {"uri": "a", "size": 1, "etag": "x"},  # en done: only fr missing
        {"uri": "b", "size": 2, "etag": "y2"},  # changed since its caption: everything again
        {"uri": "e", "size": 5, "etag": "v"},  # complete
        {"uri": "d", "size": 4, "etag": "w"},  # listed twice: planned once
    ])
    captions = _captions([
        {"uri": "a", "size": 1, "etag": "x", "lang": "en"},
        {"uri": "b", "size": 2, "etag": "y1", "lang": "en"},
        {"uri": "e", "size": 5, "etag": "v", "lang": "en"},
        {"uri": "e", "size": 5, "etag": "v", "lang": "fr"},
    ])
    table = _plan(listing, captions, NO_FAILURES, ("fr", "en"))
    assert table.to_pydict()[schema.URI] == ["a", "b", "d"]  # sorted by URI
    assert table.to_pydict()[schema.LANGS] == ["fr", "fr,en", "fr,en"]  # in the run's order of languages
    assert set(table[schema.ATTEMPT].to_pylist()) == {0}
    assert table.schema.names == [*schema.MANIFEST.names, schema.LANGS, schema.ATTEMPT, schema.STORED]
    assert table.schema.field(schema.STORED).type == pa.string()
    with todo.Todo(listing, captions, NO_FAILURES, ("fr", "en")) as plan:
        assert plan.per_language() == {"en": 2, "fr": 3}
        assert [b.num_rows for b in plan.batches(2)] == [2, 1]


def test_failed_images_are_retried_only_when_worth_it():
    listing = _listing([{"uri": u, "size": 1, "etag": "x"} for u in "pqrs"])
    failed = _errors([
        {"uri": "p", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 1},  # permanent
        {"uri": "q", "size": 1, "etag": "x", "error_type": "read_error", "attempt": 1},  # the store: retried
        {"uri": "r", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 1},  # ...later captioned
        {"uri": "s", "size": 1, "etag": "x", "error_type": "read_error", "attempt": 1},
        {"uri": "s", "size": 1, "etag": "x", "error_type": "truncated", "attempt": 2},  # latest attempt counts
    ])
    captions = _captions([{"uri": "r", "size": 1, "etag": "x", "lang": "en"}])
    table = _plan(listing, captions, failed, ("en",))
    assert dict(zip(table[schema.URI].to_pylist(), table[schema.ATTEMPT].to_pylist())) == {"q": 1}
    table = _plan(listing, captions, failed, ("en",), retry_errors=True)
    assert dict(zip(table[schema.URI].to_pylist(), table[schema.ATTEMPT].to_pylist())) == {"p": 1, "q": 1, "s": 2}


def test_identity_a_manifest_left_out_is_not_compared():
    listing = _listing([{"uri": "a"}, {"uri": "b"}])
    captions = _captions([{"uri": "a", "size": 10, "etag": "mtime:1.0", "lang": "en"}])
    assert _plan(listing, captions, NO_FAILURES, ("en",))[schema.URI].to_pylist() == ["b"]


def test_tar_members_and_listing_errors_travel_with_their_rows():
    listing = _listing([{"uri": "s.tar#a.jpg", "size": 3, "etag": "t", "offset": 512},
                        {"uri": "bad.tar", "size": 9, "etag": "u", "error": "corrupt tar after 0 members"}])
    table = _plan(listing, _captions([]), NO_FAILURES, ("en",))
    assert table.select([schema.URI, schema.OFFSET, schema.ERROR]).to_pylist() == [
        {"uri": "bad.tar", "offset": None, "error": "corrupt tar after 0 members"},
        {"uri": "s.tar#a.jpg", "offset": 512, "error": None}]


def test_source_captions_come_from_the_latest_stored_rows(tmp_path):
    writer.write_shard(image_results(["a", "b"], langs=("en",)), str(tmp_path))
    captions = state.captions(str(tmp_path), state.committed(str(tmp_path)))
    listing = _listing([{"uri": "a", "size": 1, "etag": "e"}, {"uri": "c", "size": 1, "etag": "e"}])
    stored = captions.to_table().select([schema.URI, schema.SIZE, schema.ETAG])[0:1]
    listing = _listing([stored.to_pylist()[0], {"uri": "c", "size": 1, "etag": "e"}])
    table = _plan(listing, captions, state.errors(str(tmp_path), []), ("en", "fr"), source_language="en")
    assert dict(zip(table[schema.URI].to_pylist(), table[schema.SOURCE_CAPTION].to_pylist())) == {
        "a": "en a", "c": None}
    assert table[schema.LANGS].to_pylist() == ["fr", "en,fr"]


def test_a_video_is_done_once_each_segment_is_captioned_or_failed_for_good():
    listing = _listing([{"uri": "v.mp4", "size": 9, "etag": "e"}])
    captions = _captions([{"uri": "v.mp4", "size": 9, "etag": "e", "lang": "en", "segment": k, "segments": 3}
                          for k in (0, 2)])
    lost = _errors([{"uri": "v.mp4", "size": 9, "etag": "e", "error_type": "truncated", "attempt": 1, "segment": 1}])
    assert _plan(listing, captions, lost, ("en",)).num_rows == 0
    assert _plan(listing, captions, lost, ("en",), retry_errors=True)[schema.LANGS].to_pylist() == ["en"]
    flaky = _errors([{**lost.to_pylist()[0], "error_type": "read_error"}])  # a store failure: tried again
    assert _plan(listing, captions, flaky, ("en",))[schema.LANGS].to_pylist() == ["en"]
    assert _plan(listing, captions, NO_FAILURES, ("en", "fr"))[schema.LANGS].to_pylist() == ["en,fr"]


def test_a_partly_done_video_carries_what_is_stored_of_it_and_a_replaced_one_nothing(tmp_path):
    writer.write_shard(image_results([], videos={"v.mp4": 3}, langs=("en",)), str(tmp_path))
    captions = state.captions(str(tmp_path), state.committed(str(tmp_path)))
    stored = captions.to_table().to_pylist()[0]
    old = {"uri": "v.mp4", "size": stored["size"], "etag": stored["etag"]}
    listing = _listing([old, {"uri": "w.mp4", "size": 2, "etag": "new"}])
    lost = _errors([{**old, "error_type": "truncated", "attempt": 1, "segment": 2}])
    table = _plan(listing, captions, lost, ("en", "fr"))
    first, second = (json.loads(v) if v else None for v in table[schema.STORED].to_pylist())
    assert sorted(first["captions"]) == ["0", "1", "2"] and first["captions"]["1"] == {"en": "en v.mp4"}
    assert first["failed"] == [2]
    assert second is None  # nothing stored of a new video


def test_an_output_mixing_parts_written_before_and_after_identification_plans_as_done(tmp_path):
    mixed_output(tmp_path)
    captions = state.captions(str(tmp_path), state.committed(str(tmp_path)))
    stored = captions.to_table(columns=[schema.URI, schema.SIZE, schema.ETAG]).to_pylist()
    listing = _listing([*{r["uri"]: r for r in stored}.values(), {"uri": "new/d.jpg", "size": 1, "etag": "e"}])
    table = _plan(listing, captions, state.errors(str(tmp_path), []), ("en", "fr"))
    assert table[schema.URI].to_pylist() == ["new/d.jpg"]
