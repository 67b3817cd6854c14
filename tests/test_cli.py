import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from captioner import cli
from captioner.config import DEMO_MODEL
from captioner.train import grammar

ROOT = Path(__file__).resolve().parents[1]


def _run_parser():
    parser = cli.build_parser()
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["run"]


def test_help_explains_every_option():
    run = _run_parser()
    for action in run._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.dest
    text = run.format_help()
    for flag in ("--model", "--revision", "--languages", "--num-beams", "--temperature", "--top-p", "--max-new-tokens",
                 "--seed", "--fast-generation", "--concurrency", "--batch-size", "--num-gpus", "--num-cpus",
                 "--endpoint-url", "--anon"):
        assert flag in text


def test_arguments_become_configs():
    args = cli.build_parser().parse_args(
        ["run", "s3://b/in", "s3://b/out", "--languages", "en, fr", "--num-beams", "3", "--top-p", "0.9",
         "--endpoint-url", "http://127.0.0.1:9000", "--batch-size", "8", "--extensions", "jpg,.png",
         "--image-formats", "jpeg,png,ppm", "--max-image-pixels", "1000", "--max-image-mb", "3",
         "--decode-timeout-s", "2.5", "--decode-memory-cap-mb", "300", "--store-max-attempts", "4",
         "--store-retry-mode", "adaptive", "--safetensors-only", "--dtype", "bf16",
         "--language-prompt", "start", "--fast-generation", "off"]
    )
    config = cli.run.run_config(args)
    assert config.languages == ("en", "fr")
    assert config.generation.num_beams == 3 and config.generation.do_sample and config.generation.fast == "off"
    assert config.storage.options("s3://b/in")["endpoint_url"] == "http://127.0.0.1:9000"
    assert config.storage.options("s3://b/in")["config_kwargs"]["retries"] == {"total_max_attempts": 4,
                                                                                          "mode": "adaptive"}
    assert (config.decode.formats, config.decode.max_pixels, config.decode.max_file_mb) == (("JPEG", "PNG", "PPM"),
                                                                                             1000, 3)
    assert (config.decode.timeout_s, config.decode.memory_mb) == (2.5, 300)
    assert (config.model.safetensors_only, config.model.dtype, config.model.language_prompt) == (True, "bf16", "start")
    assert config.resources.batch_size == 8 and config.resources.concurrency is None
    assert config.input.extensions == (".jpg", ".png")
    assert config.model.name == DEMO_MODEL


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_model, image_folder, tmp_path, capsys):
    assert cli.main(["run", str(image_folder), str(tmp_path / "out"), "--model", str(tiny_model), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "images listed     9" in text and "to caption        9   (per language: en 9)" in text
    assert not (tmp_path / "out").exists()


def test_bad_input_is_one_line_not_a_traceback(tiny_model, tmp_path, caplog):
    code = cli.main(["run", str(tmp_path / "missing"), str(tmp_path / "out"), "--model", str(tiny_model)])
    assert code == 2
    assert "does not exist" in caplog.text and "Traceback" not in caplog.text
    code = cli.main(["run", str(tmp_path), str(tmp_path / "out"), "--model", str(tiny_model), "--num-beams", "0"])
    assert code == 2 and "--num-beams must be at least 1" in caplog.text


@pytest.mark.slow
def test_job_entry_point_runs_the_job(tiny_model, image_folder, tmp_path):
    """What `ray job submit -- python jobs/caption.py ...` runs: a new process that starts its own Ray."""
    env = {**os.environ, "RAY_ADDRESS": "local"}  # not the latest of the other tests' clusters
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "caption.py"), str(image_folder), str(tmp_path / "out"),
         "--model", str(tiny_model), "--max-new-tokens", "4"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "captioned       6" in result.stdout and "failed          3" in result.stdout
    assert "Captions:" in result.stdout and str(tmp_path / "out") in result.stdout
    assert "ETA" in result.stderr


# What reads as trouble on a first run: log levels, Python warnings, deprecations, tracebacks, and Ray's C++ log
# lines, which the driver prints after a coloured "(pid=...)" prefix.
TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b|\w+Warning\b|[Dd]eprecat|\[[\d:,. -]+ [WEF] \d+ \d+\]")


def test_trouble_is_seen_in_ray_lines_as_the_driver_prints_them():
    gcs = ("\x1b[36m(pid=gcs_server)\x1b[0m [2026-12-07 11:58:15,850 E 21426 21426] (gcs_server) "
           "gcs_actor_scheduler.cc:538: Failed to kill actor NIL_ID")
    assert TROUBLE.search(gcs) and TROUBLE.search("[2026-12-07 11:58:15,850 W 1 2] core_worker.cc:1: restart")
    assert not TROUBLE.search("    en  a white diamond   score -0.00")


def _readme_demo_command() -> list[str]:
    """The README's first command, from its last ``&&`` on: the run itself (the install before it is done)."""
    block = re.search(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text()).group(1)
    command = shlex.split(block.split("&&")[-1])
    assert command[:2] == [".venv/bin/captioner", "run"], command
    return [str(Path(sys.executable).with_name("captioner")), *command[1:]]


@pytest.mark.slow
def test_the_readme_demo_prints_captions_and_nothing_that_reads_as_trouble(tmp_path):
    (tmp_path / "captioner").mkdir()
    (tmp_path / "captioner" / "samples").symlink_to(ROOT / "captioner" / "samples")
    # A fresh laptop has no other Ray; here other tests' clusters run beside, and ray.init() would join the
    # latest of them, so the demo gets a Ray of its own as it would there.
    env = {**os.environ, "RAY_ADDRESS": "local"}
    result = subprocess.run(_readme_demo_command(), cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    trouble = [line for line in (result.stdout + result.stderr).splitlines() if TROUBLE.search(line)]
    assert not trouble, "\n".join(trouble)
    assert "run " in result.stdout and "succeeded" in result.stdout and "demo-out/captions/" in result.stdout
    lines = result.stdout.splitlines()
    for sample in (ROOT / "captioner" / "samples").iterdir():
        heading = next(i for i, line in enumerate(lines) if line.startswith(f"  {sample.name}"))
        lang, text = lines[heading + 1].split("score")[0].split(None, 1)  # "    en  a red star above ..."
        truth = grammar.parse(re.sub(r"^\d+-|\.\w+$", "", sample.name).replace("-", " "), "en")
        said = grammar.parse(text.strip(), lang)
        assert said and grammar.canonical(said) == grammar.canonical(truth), (sample.name, text)
    assert "captioner report demo-out" in result.stdout


def test_stats_prints_counts_and_json(tmp_path, capsys):
    import json

    from captioner.store import writer
    from results import image_results

    writer.write_shard(image_results(["a", "b"], failed={"b": "truncated"}), str(tmp_path))
    assert cli.main(["stats", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "captioned 1, failed 1" in text and "[fr] 1 captions" in text and "error truncated: 1" in text
    assert cli.main(["stats", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["captions_per_language"] == {"en": 1, "fr": 1}


def test_stats_and_query_show_a_french_row_holding_english_in_an_output_also_written_before(tmp_path, capsys):
    import json

    from results import mixed_output

    mixed_output(tmp_path)
    assert cli.main(["stats", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "[fr] 1 of 3 rows look like another language (1 not identified)" in text
    assert "[en] 0 of 3 rows look like another language" in text and "--wrong-language" in text
    assert cli.main(["query", str(tmp_path), "--wrong-language", "--format", "json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["uri"], row["lang"], row["detected_lang"]) == ("new/b.jpg", "fr", "en")
    for fmt in ("csv", "parquet"):  # exports carry the columns, null for the old rows
        assert cli.main(["query", str(tmp_path), "--format", fmt, "--out", str(tmp_path / f"all.{fmt}")]) == 0


@pytest.mark.slow
def test_train_command_runs_and_resumes(tmp_path, capsys):
    import json

    from captioner.train import synth

    data = tmp_path / "data.parquet"
    synth.write_parquet(str(data), n=40, seed=3, size=32)
    args = ["train", "--data", str(data), "--output-dir", str(tmp_path / "model"), "--image-size", "32",
            "--batch-size", "8", "--stage-epochs", "0", "0", "1", "--num-threads", "1"]
    assert cli.main([*args, "--stop-after-steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert cli.main(args) == 0  # the same command again resumes and finishes the epoch
    assert json.loads(capsys.readouterr().out)["step"] > 2
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert cli.main(["train", "--data", str(data), "--output-dir", str(tmp_path / "m2"), "--image-size", "30"]) == 2


def test_caption_style_prompt_and_image_size_become_model_settings(capsys):
    parser = cli.build_parser()
    default = cli.run.run_config(parser.parse_args(["run", "in", "out"]))
    assert (default.model.caption_style, default.model.prompt, default.model.image_size) == ("short", None, None)
    assert default.generation.max_new_tokens == 32
    chat = cli.run.run_config(parser.parse_args(["run", "in", "out", "--caption-style", "paragraph", "--prompt",
                                                 "Describe it in {language}.", "--image-size", "448x336"]))
    assert (chat.model.caption_style, chat.model.prompt, chat.model.image_size) == (
        "paragraph", "Describe it in {language}.", (448, 336))
    assert chat.generation.max_new_tokens == 320  # a paragraph's default room
    capped = parser.parse_args(["run", "in", "out", "--caption-style", "detailed", "--max-new-tokens", "20"])
    assert cli.run.run_config(capped).generation.max_new_tokens == 20
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "in", "out", "--image-size", "448"])
    assert "expected WIDTHxHEIGHT" in capsys.readouterr().err


def test_concurrency_takes_a_number_or_a_range(capsys):
    parser = cli.build_parser()
    assert cli.run.run_config(parser.parse_args(["run", "in", "out", "--concurrency", "3"])).resources.concurrency == 3
    ranged = cli.run.run_config(parser.parse_args(["run", "in", "out", "--concurrency", "1:8"])).resources
    assert (ranged.concurrency, ranged.max_concurrency) == (1, 8)
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "in", "out", "--concurrency", "many"])
    assert "expected a number of actors or MIN:MAX" in capsys.readouterr().err


@pytest.mark.slow
def test_credentials_never_reach_logs_records_or_output(tiny_model, s3, faulty_s3, tmp_path):
    """Canary credentials through a throttling store, with -v: not in any output, record, log or error."""
    import shutil
    import uuid

    from conftest import jpeg_bytes

    fs, bucket = s3
    for i in range(5):
        fs.pipe(f"{bucket}/in/img{i}.jpg", jpeg_bytes(i))
    fs.pipe(f"{bucket}/in/broken.jpg", b"not an image")
    secret, key_id = "canarySECRET/do+not+leak-7f3a9c", "AKIACANARY7F3A9C0000"
    ray_tmp = f"/tmp/rc{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID=key_id, RAY_ADDRESS="local", RAY_TMPDIR=ray_tmp)
    faulty_s3.error_rate = 0.1
    command = [sys.executable, "-m", "captioner.cli", "-v", "run", f"s3://{bucket}/in/", f"s3://{bucket}/out",
               "--endpoint-url", faulty_s3.url, "--model", str(tiny_model), "--max-new-tokens", "4"]
    try:
        ok = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr[-3000:]
        faulty_s3.deny = {("PUT", "")}
        refused = subprocess.run([*command[:6], f"s3://{bucket}/elsewhere", *command[7:]], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "s3:PutObject" in refused.stderr, refused.stderr[-3000:]
        written = [ok.stdout, ok.stderr, refused.stdout, refused.stderr]
        written += [fs.cat(key).decode("latin-1") for key in fs.find(f"{bucket}/out")]
        logs = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and not p.is_socket()]
        assert logs, "Ray wrote no logs to look through"
        written += [p.read_bytes().decode("latin-1") for p in logs]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "captioned       5" in ok.stdout
    for text in written:
        assert secret not in text and key_id not in text
