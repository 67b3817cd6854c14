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
    plan = tmp_path / "runs" / "r0" / "todo" / "part-000000.parquet"  # a killed run's plan
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"PAR1")
    (tmp_path / "runs" / "r0" / "run.json").write_text("{}")
    assert state.remove_orphans(out) == 1 and not orphan.exists() and foreign.exists()
    assert not plan.parent.exists() and (tmp_path / "runs" / "r0" / "run.json").exists()
    assert state.remove_orphans(out) == 0


def test_a_marker_whose_files_are_gone_commits_nothing_and_is_cleaned_up(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a"], run_id="r1"), out)
    writer.write_shard(image_results(["b"], run_id="r2"), out)
    late = next(s for s in state.committed(out) if s.run_id == "r2")
    os.remove(tmp_path / late.files[0])  # deleted as an orphan before its late marker landed
    assert [s.run_id for s in state.committed(out)] == ["r1"]  # r2's images are done again, not a failed read
    assert state.captions(out, state.committed(out)).count_rows() == 2
    assert state.remove_orphans(out) == 1  # r2's other file goes too, and so does its marker
    assert len(list((tmp_path / "_commits").iterdir())) == 1 and state.remove_orphans(out) == 0


def test_a_stopping_run_waits_for_its_writes_in_flight_and_no_longer(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a"], run_id="r1"), out)
    assert not list(tmp_path.glob("_inflight/*/*"))  # a finished write leaves no in-flight record
    state.storage.write_bytes_atomic(state.inflight_marker(out, "r1", "part-x.parquet"), b"{}")
    assert state.drain(out, "r1", timeout_s=0.6) == 1  # still running after the bound: given up on
    assert state.drain(out, "r2", timeout_s=5) == 0
    state.remove_orphans(out)  # the next run holds the lease: nothing of r1 is still writing
    assert not (tmp_path / "_inflight").exists()


def test_empty_output_reads_as_empty(tmp_path):
    assert state.committed(str(tmp_path)) == []
    assert state.captions(str(tmp_path), []).count_rows() == 0
    assert state.errors(str(tmp_path), []).count_rows() == 0


def test_run_records_oldest_first(tmp_path):
    state.write_run_record(str(tmp_path), "20260102T000000Z-b", {"run_id": "20260102T000000Z-b", "status": "failed"})
    state.write_run_record(str(tmp_path), "20260101T000000Z-a", {"run_id": "20260101T000000Z-a", "status": "succeeded"})
    assert [r["status"] for r in state.run_records(str(tmp_path))] == ["succeeded", "failed"]
    assert os.path.exists(tmp_path / "runs" / "20260101T000000Z-a" / "run.json")
