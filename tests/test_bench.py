"""benchmarks/bench.py on tiny settings, so the script keeps working; its figures are not judged here."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # its neighbour vit_gpt2.py, as when run as a script
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SIZES", {"camera": (160, 120), "web": (96, 72)})  # tiny stand-ins
    return module


def _run(bench, tmp_path, *argv) -> dict:
    out = tmp_path / "result.json"
    assert bench.main(["--cache", str(tmp_path / "cache"), "--json", str(out), "--repeats", "1", *argv]) == 0
    return json.loads(out.read_text())


def test_model_only_baseline_and_decode(bench, tmp_path, capsys):
    result = _run(bench, tmp_path, "--model", "demo", "--images", "8", "--inputs", "web-jpeg", "--decode-images", "2",
                  "--skip", "pipeline")
    assert result["images_per_s"]["model_only"] > 0 and result["images_per_s"]["baseline"] > 0
    assert "pipeline/model_only" not in result["ratios"]
    assert [row["inputs"] for row in result["decode"]] == bench.KINDS
    assert all(row["draft"] > 0 and row["full"] > 0 and row["child"] > 0 for row in result["decode"])
    assert result["flops_per_image"] > 0
    assert "decode, 1 core" in capsys.readouterr().out


def test_textured_images_compress_like_photos(bench):
    import io

    import numpy as np

    buf = io.BytesIO()
    bench.textured(np.random.default_rng(0), 640, 480).save(buf, format="JPEG", quality=90)
    assert 10_000 < len(buf.getvalue()) < 200_000  # neither a flat fill nor incompressible noise


def test_steady_rate_starts_once_every_actor_has_delivered(bench):
    one = [(10.0 + 8 * i, 32) for i in range(5)]  # one actor: 32 images every 8 s
    assert bench.steady_rate(one, actors=1) == pytest.approx(4.0)
    two = sorted([(10.0 + 16 * i, 32) for i in range(4)] + [(10.5 + 16 * i, 32) for i in range(4)])  # 2 x 2 img/s
    assert bench.steady_rate(two, actors=2) == pytest.approx(4.0, rel=0.05)
    assert bench.steady_rate(two, actors=1) > 4.3  # what counting from the first marker reported
    assert math.isnan(bench.steady_rate([(5.0, 32)], actors=1))


@pytest.mark.slow
def test_pipeline_ratios_and_memory(bench, tmp_path):
    result = _run(bench, tmp_path, "--model", "demo", "--images", "32", "--inputs", "web-jpeg", "--batch-size", "8",
                  "--skip", "baseline,decode")
    run = result["rounds"][0]["pipeline"]
    assert (run["captioned"], run["shards"]) == (32, 4)
    assert result["images_per_s"]["pipeline"] > 0 and result["ratios"]["pipeline/model_only"] > 0
    assert result["pipeline"]["driver_peak_mib"] > 0 and result["pipeline"]["actor_peak_mib"] > 0


@pytest.mark.slow
def test_memory_run(bench, tmp_path, capsys):
    result = _run(bench, tmp_path, "--memory-run", "64")
    assert result["memory_run"]["captioned"] == 64
    assert set(result["points"]) == {"start", "middle", "end"}
    assert "driver MiB" in capsys.readouterr().out


def test_scale_benchmark_counts_what_it_plans(capsys):
    """benchmarks/scale.py on a thousand images: its plan and dry run find exactly the images left out."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "1000", "--tree-sizes",
                           "1000", "--new", "0.1", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["what"]: row for row in json.loads(done.stdout.strip().splitlines()[-1])}
    assert set(rows) == {"manifest", "plan", "dry run", "list tree"}
    assert rows["plan"]["runs"][0]["todo"] == rows["dry run"]["runs"][0]["todo"] == 100
    assert rows["dry run"]["runs"][0]["done"] == 900 and rows["list tree"]["runs"][0]["listed"] == 1000
