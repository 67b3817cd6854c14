"""benchmarks/gpu_generate.py at its CPU settings, so the device script keeps working; figures are not judged."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(monkeypatch, name: str = "gpu_generate"):
    """A script of benchmarks/ as a module, with its neighbours (vit_gpt2.py, florence2.py) importable, as when run."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_cpu_check_measures_both_paths_at_each_batch_size(monkeypatch, tmp_path, capsys):
    script = load_script(monkeypatch)
    out = tmp_path / "result.json"
    assert script.main(["--device", "cpu", "--batch-sizes", "2", "3", "--model", "demo", "--repeats", "1",
                        "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(row["dtype"], row["batch"]) for row in report["rows"]] == [("fp32", 2), ("fp32", 3)]
    for row in report["rows"]:
        assert row["gflop_per_caption"] > 0 and row["fast_over_plain"] > 0
        assert all(row[path]["captions_per_s"] > 0 and 0 < row[path]["share_of_peak"] < 1 for path in ("plain", "fast"))
    assert "fast cap/s" in capsys.readouterr().out


def test_it_builds_and_measures_florence2_scaled_down_on_a_cpu(monkeypatch, tmp_path):
    """The Florence-2-base build at --small: its processor, 17 image tokens, the detailed task, both paths."""
    script = load_script(monkeypatch)
    out = tmp_path / "result.json"
    assert script.main(["--device", "cpu", "--batch-sizes", "2", "--model", "florence2-base", "--small",
                        "--caption-style", "detailed", "--max-new-tokens", "4", "--repeats", "1",
                        "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["model"], report["caption_style"]) == ("florence2-base (small)", "detailed")
    assert all(report["rows"][0][path]["captions_per_s"] > 0 for path in ("plain", "fast"))


def test_the_cpu_check_builds_paligemma_2_from_its_architecture_made_small(monkeypatch, tmp_path):
    """The same script on PaliGemma 2's kinds of layers (SigLIP, Gemma 2, 256 image tokens) at a few small ones."""
    script = load_script(monkeypatch)
    out = tmp_path / "result.json"
    assert script.main(["--device", "cpu", "--batch-sizes", "2", "--model", "paligemma2", "--small", "--repeats", "1",
                        "--max-new-tokens", "4", "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "paligemma2 (small)" and [row["batch"] for row in report["rows"]] == [2]
    assert all(report["rows"][0][path]["captions_per_s"] > 0 for path in ("plain", "fast"))
