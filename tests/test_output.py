import os
import subprocess
import sys
import time

import pytest

from captioner import output, writer
from test_writer import image_results


def test_committed_sees_only_marked_shards_and_orphans_go(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b"], run_id="r1"), out)
    committed_file = next((tmp_path / "captions" / "lang=en").glob("part-*.parquet"))
    orphan = tmp_path / "captions" / "lang=en" / ("part-" + "0" * 24 + ".parquet")
    orphan.write_bytes(committed_file.read_bytes())
    foreign = tmp_path / "captions" / "notes.parquet"  # not ours: never deleted
    foreign.write_bytes(b"user data")
    shards = output.committed(out)
    assert len(shards) == 1
    assert output.captions(out, shards).count_rows() == 4  # the orphan's copies are not read
    assert output.remove_orphans(out, shards) == 1 and not orphan.exists() and foreign.exists()
    assert output.remove_orphans(out, shards) == 0


def test_files_made_with_other_settings_are_found_and_replaced(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["a", "b"], failed={"b": "empty"}, run_id="r1", fingerprint="old"), out)
    writer.write_shard(image_results(["a"], run_id="r2", fingerprint="new", langs=("en",)), out)
    shards = output.committed(out)
    found = output.conflicts(shards, {"en": "new"})  # fr is not asked for: its old rows are no conflict
    assert list(found) == ["en:old (run r1)"]
    assert output.captions(out, shards, fingerprints={"en": "new"}).count_rows() == 1
    output.remove_files(out, shards, set().union(*found.values()))
    left = {s.run_id: s for s in output.committed(out)}
    assert left["r1"].fingerprints == {"fr": "old"} and len(left["r1"].files) == 2  # fr captions and errors stay
    listed = sorted(f for s in left.values() for f in s.files)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == listed


def test_empty_output_reads_as_empty(tmp_path):
    assert output.committed(str(tmp_path)) == []
    assert output.captions(str(tmp_path), []).count_rows() == 0
    assert output.errors(str(tmp_path), []).count_rows() == 0


def test_lease_refuses_a_second_writer_and_is_released(tmp_path):
    out = str(tmp_path)
    with output.Lease(out, "run-1"):
        with pytest.raises(output.OutputBusy, match="run-1"):
            with output.Lease(out, "run-2"):
                pass
    assert not (tmp_path / "_lease.json").exists()
    with output.Lease(out, "run-3"):
        pass


def test_lease_of_a_dead_process_is_taken_over_at_once(tmp_path):
    out = str(tmp_path)
    code = f"from captioner import output; output.Lease({out!r}, 'doomed').__enter__(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "_lease.json").exists()  # left behind, as after SIGKILL
    with output.Lease(out, "next"):
        pass


def test_lease_of_a_silent_remote_holder_lapses(tmp_path, monkeypatch):
    out = str(tmp_path)
    lease = output.Lease(out, "remote")
    lease.record["host"] = "some-other-host"
    lease._write()
    with pytest.raises(output.OutputBusy):
        output.Lease(out, "mine").__enter__()
    monkeypatch.setattr(output, "LEASE_TTL_S", 0.01)
    time.sleep(0.05)
    with output.Lease(out, "mine"):
        pass


def test_run_records_oldest_first(tmp_path):
    output.write_run_record(str(tmp_path), "20260102T000000Z-b", {"run_id": "20260102T000000Z-b", "status": "failed"})
    output.write_run_record(str(tmp_path), "20260101T000000Z-a", {"run_id": "20260101T000000Z-a", "status": "succeeded"})
    assert [r["status"] for r in output.run_records(str(tmp_path))] == ["succeeded", "failed"]
    assert os.path.exists(tmp_path / "runs" / "20260101T000000Z-a" / "run.json")
