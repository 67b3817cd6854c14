import os


from captioner.store import state, writer
from results import image_results


def test_committed_sees_only_marked_shards_and_orphans_go(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b"], run_id="r1"), out)
    committed_file = next((tmp_path / "captions" / "lang=en").glob("part-*.parquet"))
    orphan = tmp_path / "captions" / "lang=en" / ("part-" + "0" * 24 + ".parquet")
    orphan.write_bytes(committed_file.read_bytes())
    foreign = tmp_path / "captions" / "notes.parquet"  # not ours: never deleted
    foreign.write_bytes(b"user data")
    shards = state.committed(out)
    assert len(shards) == 1
    assert state.captions(out, shards).count_rows() == 4  # the orphan's copies are not read
    assert state.remove_orphans(out, shards) == 1 and not orphan.exists() and foreign.exists()
    assert state.remove_orphans(out, shards) == 0


def test_files_made_with_other_settings_are_found_and_replaced(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b"], failed={"b": "empty"}, run_id="r1", fingerprint="old"), out)
    writer.write_shard(image_results(["a"], run_id="r2", fingerprint="new", langs=("en",)), out)
    shards = state.committed(out)
    found = state.conflicts(shards, {"en": "new"})  # fr is not asked for: its old rows are no conflict
    assert list(found) == ["en:old (run r1)"]
    assert state.captions(out, shards, fingerprints={"en": "new"}).count_rows() == 1
    state.remove_files(out, shards, set().union(*found.values()))
    left = {s.run_id: s for s in state.committed(out)}
    assert left["r1"].fingerprints == {"fr": "old"} and len(left["r1"].files) == 2  # fr captions and errors stay
    listed = sorted(f for s in left.values() for f in s.files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == listed


def test_empty_output_reads_as_empty(tmp_path):
    assert state.committed(str(tmp_path)) == []
    assert state.captions(str(tmp_path), []).count_rows() == 0
    assert state.errors(str(tmp_path), []).count_rows() == 0


def test_run_records_oldest_first(tmp_path):
    state.write_run_record(str(tmp_path), "20260102T000000Z-b", {"run_id": "20260102T000000Z-b", "status": "failed"})
    state.write_run_record(str(tmp_path), "20260101T000000Z-a", {"run_id": "20260101T000000Z-a", "status": "succeeded"})
    assert [r["status"] for r in state.run_records(str(tmp_path))] == ["succeeded", "failed"]
    assert os.path.exists(tmp_path / "runs" / "20260101T000000Z-a" / "run.json")
