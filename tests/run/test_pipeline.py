"""End-to-end: the real job on real Ray over a local folder: resume, settings, errors, malformed files."""

import math
from dataclasses import replace

import pyarrow.dataset as pads
import pytest

from captioner.run import pipeline
from captioner.config import GenerationConfig, ResourceConfig
from captioner.fingerprint import fingerprints
from conftest import BAD, GOOD, jpeg_bytes
from pipeline_runs import kill_session, read_captions, read_errors, run_config

pytestmark = pytest.mark.slow


def _data_files(root):
    """Parquet files and markers with their modification times: what a rerun must not touch."""
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "runs" not in p.parts}


def test_local_folder(local_ray, tiny_model, image_folder, tmp_path):
    out = str(tmp_path / "out")
    summary = pipeline.run(run_config(tiny_model, str(image_folder), out))
    assert (summary.listed, summary.captioned, summary.failed, summary.captions) == (GOOD + len(BAD), GOOD, len(BAD), GOOD)
    captions = read_captions(out)
    assert len(captions) == GOOD
    for (uri, lang), row in captions.items():
        assert uri.startswith(str(image_folder)) and lang == "en"
        assert row["caption"] and math.isfinite(row["score"]) and row["width"] > 0
        assert row["model"] == str(tiny_model) and row["run_id"] == summary.run_id
    errors = {e["uri"].rsplit("/", 1)[1]: e["error_type"] for e in read_errors(out)}
    assert errors == BAD
    assert (tmp_path / "out" / "runs" / summary.run_id / "run.json").exists()

    before = _data_files(tmp_path / "out")
    again = pipeline.run(run_config(tiny_model, str(image_folder), out))
    assert (again.skipped, again.images) == (GOOD + len(BAD), 0)
    assert _data_files(tmp_path / "out") == before  # a finished job reruns without writing a row

    fresh = str(tmp_path / "fresh")
    pipeline.run(run_config(tiny_model, str(image_folder), fresh))
    assert {k: r["caption"] for k, r in read_captions(fresh).items()} == {k: r["caption"] for k, r in captions.items()}


def test_a_dry_run_counts_what_the_run_then_does_and_writes_nothing(local_ray, image_folder, tmp_path, monkeypatch):
    from captioner.run import planning, reading
    from conftest import build_tiny_model

    out = tmp_path / "out"
    multilingual = build_tiny_model(tmp_path / "model", languages=("en", "fr", "de"))
    config = run_config(multilingual, str(image_folder), str(out), languages=("en", "fr"),
                     resources=ResourceConfig(rows_per_file=4))
    with monkeypatch.context() as m:
        m.setattr(reading, "_read", lambda *a: pytest.fail("a dry run read an image"))
        before = pipeline.dry_run(config)
    assert not out.exists()  # not even the lease
    assert before == planning.Plan(listed=GOOD + len(BAD), done=0, failed_for_good=0, todo=GOOD + len(BAD),
                                   per_language={"en": GOOD + len(BAD), "fr": GOOD + len(BAD)}, shards=3)
    summary = pipeline.run(config)
    assert summary.images == before.todo and len(list((out / "_commits").iterdir())) == before.shards
    after = pipeline.dry_run(config)
    assert (after.done, after.failed_for_good, after.todo, after.per_language) == (GOOD, len(BAD), 0, {})
    assert pipeline.dry_run(replace(config, languages=("en", "fr", "de"))).per_language == {"de": GOOD}


def _many_images(folder, n):
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(i))
    return folder


def _assert_exactly_once(out, images, langs=("en",)):
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table()
    pairs = list(zip(table["uri"].to_pylist(), table["lang"].to_pylist()))
    assert len(pairs) == len(set(pairs)), "a row was written twice"
    assert set(pairs) == {(str(p), lang) for p in images for lang in langs}, "a row is missing"


def test_rerun_after_the_driver_is_killed(tiny_model, tmp_path):
    """SIGKILL the driver part-way, rerun the same command: every pair once, the rerun writes only what is missing.

    The killed run's workers commit 3 shards, then hold every later marker (their files written: orphans), so the
    kill lands at the same point however fast the machine is."""
    import os
    import subprocess
    import sys
    import time

    from captioner.store import state
    from faults import child_env

    folder = _many_images(tmp_path / "photos", 20)
    out = tmp_path / "out"
    faults = tmp_path / "faults"
    faults.mkdir()
    command = [sys.executable, "-m", "captioner.cli", "run", str(folder), str(out), "--model", str(tiny_model),
               "--max-new-tokens", "6", "--batch-size", "2", "--decode-batch-size", "2", "--rows-per-file", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    held = child_env(env, "held_commits", str(faults), CAPTIONER_TEST_COMMITS="3")
    victim = subprocess.Popen(command, env=held, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240  # a bound for a broken run only: the held markers decide when
    while len(list(faults.glob("ticket-*"))) <= 3 or len(list((out / "_commits").glob("*.json"))) < 3:
        assert victim.poll() is None and time.monotonic() < deadline, "the run never reached its fourth shard"
        time.sleep(0.05)
    kill_session(victim.pid)  # the driver and the local Ray it started (workers have groups of their own), at once
    victim.wait()
    assert len(list((out / "_commits").glob("*.json"))) == 3
    done_before = sum(shard.counts["captioned"] for shard in state.committed(str(out)))
    assert done_before == 6

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"captioned       {20 - done_before}" in rerun.stdout
    _assert_exactly_once(str(out), sorted(folder.iterdir()))
    for path in out.rglob("*.parquet"):
        pads.dataset(path, format="parquet").to_table()  # every file reads


def test_changed_settings_refused_unless_a_mode_is_chosen(local_ray, tiny_model, image_folder, tmp_path):
    from captioner.config import ConfigError

    out = str(tmp_path / "out")
    pipeline.run(run_config(tiny_model, str(image_folder), out))
    beams = GenerationConfig(max_new_tokens=6, num_beams=2)
    with pytest.raises(ConfigError, match="--mode append"):
        pipeline.run(run_config(tiny_model, str(image_folder), out, generation=beams))

    appended = pipeline.run(run_config(tiny_model, str(image_folder), out, generation=beams, mode="append"))
    assert appended.captioned == GOOD
    greedy = fingerprints(run_config(tiny_model, "", ""))["en"]
    beam = fingerprints(run_config(tiny_model, "", "", generation=beams))["en"]
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table()
    assert sorted(table["fingerprint"].to_pylist()) == sorted([greedy] * GOOD + [beam] * GOOD)

    replaced = pipeline.run(run_config(tiny_model, str(image_folder), out, mode="overwrite"))
    assert replaced.images == 0  # the greedy captions were already there: nothing to redo, the beam ones go
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table()
    assert set(table["fingerprint"].to_pylist()) == {greedy} and table.num_rows == GOOD

    subset = tmp_path / "two.txt"  # overwrite replaces only the rows this run wrote anew
    subset.write_text("".join(f"{image_folder / name}\n" for name in ("img0.jpg", "img1.jpg")))
    partial = pipeline.run(run_config(tiny_model, str(subset), out, generation=beams, mode="overwrite"))
    assert partial.captioned == 2
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table()
    by_uri = dict(zip(table["uri"].to_pylist(), table["fingerprint"].to_pylist()))
    assert table.num_rows == GOOD and sorted(by_uri.values()) == sorted([beam] * 2 + [greedy] * (GOOD - 2))
    assert by_uri[str(image_folder / "img0.jpg")] == beam

    overwritten = pipeline.run(run_config(tiny_model, str(image_folder), out, generation=beams, mode="overwrite"))
    assert overwritten.captioned == GOOD - 2
    table = pads.dataset(out + "/captions", format="parquet", partitioning="hive").to_table()
    assert set(table["fingerprint"].to_pylist()) == {beam} and table.num_rows == GOOD


def test_errors_retried_only_when_asked_and_error_rate_enforced(local_ray, tiny_model, image_folder, tmp_path):
    out = str(tmp_path / "out")
    pipeline.run(run_config(tiny_model, str(image_folder), out))
    (image_folder / "notes.jpg").write_bytes(jpeg_bytes(99))  # the text file is now a picture
    assert pipeline.run(run_config(tiny_model, str(image_folder), out)).images == 1  # changed object: new identity
    retried = pipeline.run(run_config(tiny_model, str(image_folder), out, retry_errors=True))
    assert (retried.images, retried.failed) == (2, 2)
    attempts = sorted(e["attempt"] for e in read_errors(out) if e["uri"].endswith("truncated.jpg"))
    assert attempts == [1, 2]

    with pytest.raises(pipeline.RunFailed, match="max-error-rate"):
        pipeline.run(run_config(tiny_model, str(image_folder), str(tmp_path / "strict"), max_error_rate=0.1))


def _peak_rss_by_kind(stop, peaks):
    """Sample the resident memory of Ray workers and decoding processes until ``stop`` is set."""
    import time
    from pathlib import Path

    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            try:
                title = (proc / "cmdline").read_bytes().decode(errors="replace")
                rss = int((proc / "statm").read_text().split()[1]) * 4096
            except (OSError, ValueError, IndexError):
                continue
            kind = "decoder" if "captioner.media.sandbox" in title else "ray worker" if title.startswith("ray::") else None
            if kind:
                peaks[kind] = max(peaks.get(kind, 0), rss)
        time.sleep(0.05)


def test_malformed_corpus_every_file_once(local_ray, tiny_model, tmp_path):
    """18 kinds of unusual files, 20 each: exit cleanly, one row per file, the right error for each bad one."""
    import threading

    import corpus

    expected = corpus.write(tmp_path / "corpus")
    out = str(tmp_path / "out")
    peaks, stop = {}, threading.Event()
    sampler = threading.Thread(target=_peak_rss_by_kind, args=(stop, peaks), daemon=True)
    sampler.start()
    try:
        summary = pipeline.run(run_config(tiny_model, str(tmp_path / "corpus"), out))
    finally:
        stop.set()
        sampler.join()
    assert summary.status == "succeeded" and summary.listed == len(expected) == 360
    good = {str(p) for p, outcome in expected.items() if outcome is None}
    assert (summary.captioned, summary.failed) == (len(good), len(expected) - len(good))
    captions = read_captions(out)
    errors = read_errors(out)
    seen = [uri for uri, _ in captions] + [e["uri"] for e in errors]
    assert sorted(seen) == sorted(str(p) for p in expected), "every file exactly once"
    assert {uri for uri, _ in captions} == good
    assert {e["uri"]: e["error_type"] for e in errors} == {str(p): o for p, o in expected.items() if o is not None}
    assert all(e["error"] for e in errors)
    print("peak RSS MiB:", {k: v // 2**20 for k, v in peaks.items()})
    assert peaks["decoder"] < 200 * 2**20, peaks  # tiny images; bombs and 3 GiB files never decoded or read
    assert peaks["ray worker"] < 2 * 2**30, peaks
