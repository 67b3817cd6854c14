import pyarrow as pa

from captioner import query
from captioner.store import rewrite, state, writer
from results import image_results


def test_files_made_with_other_settings_are_found_and_replaced(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b"], failed={"b": "empty"}, run_id="r1", fingerprint="old"), out)
    writer.write_shard(image_results(["a"], run_id="r2", fingerprint="new", langs=("en",)), out)
    shards = state.committed(out)
    found = state.conflicts(shards, {"en": "new"})  # fr is not asked for: its old rows are no conflict
    assert list(found) == ["en:old (run r1)"]
    assert state.captions(out, shards, fingerprints={"en": "new"}).count_rows() == 1
    rewrite.remove_files(out, shards, set().union(*found.values()))
    left = {s.run_id: s for s in state.committed(out)}
    assert left["r1"].fingerprints == {"fr": "old"} and len(left["r1"].files) == 2  # fr captions and errors stay
    assert left["r1"].counts["captions"] == 1  # the marker says what its files hold now
    listed = sorted(f for s in left.values() for f in s.files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == listed


def test_recount_agrees_with_what_the_writer_counted(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b", "c"], failed={"c": "truncated"}, empty={"b"}, videos={"v.mp4": 3}),
                       out)
    shard = state.committed(out)[0]
    assert rewrite.recount(out, shard.files) == (shard.counts, shard.errors_by_type)


def _fresh_count(out: str) -> dict:
    """What the Parquet itself holds, counted without markers."""
    rows = state.captions(out, state.committed(out)).to_table(columns=["uri", "lang"])
    return {"caption_rows": rows.num_rows,
            "images": len(set(rows["uri"].to_pylist()) | set(state.errors(out, state.committed(out))
                                                             .to_table(columns=["uri"])["uri"].to_pylist()))}


def test_stats_after_an_overwrite_equal_a_fresh_count(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b", "c"], failed={"c": "truncated"}, run_id="r1", fingerprint="old"),
                       out)
    writer.write_shard(image_results(["a"], run_id="r2", fingerprint="new", langs=("en",)), out)
    shards = state.committed(out)
    old_en = set().union(*state.conflicts(shards, {"en": "new"}).values())
    superseded = pa.table({"uri": ["a"], "lang": ["en"]})
    assert rewrite.drop_rows(out, shards, old_en, superseded) == 1  # a's old English caption; b's stays
    stats = query.stats(out)
    fresh = _fresh_count(out)
    assert stats["caption_rows"] == fresh["caption_rows"] == sum(stats["captions_per_language"].values()) == 4
    assert stats["failed"] == 1 and stats["errors_by_type"] == {"truncated": 1}
    by_run = {s.run_id: s.counts for s in state.committed(out)}
    assert by_run["r1"]["captions"] == 3 and by_run["r1"]["images"] == 3 and by_run["r2"]["images"] == 1
