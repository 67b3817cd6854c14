"""benchmarks/gpu_extras.py at its CPU settings, and the whole device script shrunk to the CPU, so both keep
working where no GPU is; figures are not judged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_gpu_generate import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_the_cpu_check_compares_half_precision_with_fp32_on_both_paths(monkeypatch, capsys):
    script = load_script(monkeypatch, "gpu_extras")
    assert script.main(["--device", "cpu", "--model", "demo", "--images", "4", "--batch-size", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["agreement"]) == {"bf16 plain", "bf16 fast"}
    assert all(0 <= share <= 1 for share in report["agreement"].values())
    assert "transfer" not in report  # CUDA only


@pytest.mark.slow
def test_the_device_script_runs_every_step_shrunk_on_a_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu-check"], env=env, capture_output=True,
                         text=True, timeout=600).stdout
    for step in ("== ViT-GPT2", "== florence2-base", "== paligemma2", "== half precision"):
        assert step in out
    assert out.count("benchmark exit status 0") == 4 and "self-check" in out
