import logging

from captioner.config import InputConfig, ModelConfig, RunConfig
import io

from captioner.run.summary import (Progress, RunSummary, format_captions, format_summary, next_commands, run_record,
                                   run_settings)


def test_summary_says_what_happened_and_where_the_captions_are():
    summary = RunSummary(run_id="r1", output="s3://b/out/", listed=10, skipped=2, images=8, captioned=7, failed=1,
                         captions=14, elapsed_s=4.0, startup_s=1.5, status="succeeded")
    text = format_summary(summary)
    assert text.splitlines()[0] == "run r1: succeeded"
    assert "images listed   10" in text and "already done    2" in text and "failed          1" in text
    assert "(2.0 images/s; first shard committed after 1.5 s)" in text
    assert "s3://b/out/captions/" in text


def test_run_record_keeps_settings_without_credentials():
    config = RunConfig(input=InputConfig("s3://key:secret@bucket/in"), output="out",
                       model=ModelConfig(name="s3://key:secret@bucket/model"))
    record = run_record(RunSummary(run_id="r1", output="out", settings=run_settings(config), images=4, elapsed_s=2.0))
    assert record["images_per_s"] == 2.0 and record["schema_version"] >= 1
    assert "secret" not in str(record)
    assert record["settings"]["model"]["name"].endswith("bucket/model")


def test_progress_logs_rate_and_eta(caplog):
    progress = Progress(total=10)
    with caplog.at_level(logging.INFO, logger="captioner.run.summary"):
        progress.update(5)
        progress.update(6)  # within a few seconds of the last line: not logged
        progress.update(10)  # the end is always logged
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("5/10 images (50%)") and "ETA" in lines[0]
    assert lines[1].startswith("10/10 images (100%)")


def test_progress_is_a_live_bar_with_rate_and_eta_on_a_terminal(caplog):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with caplog.at_level(logging.INFO, logger="captioner.run.summary"), Progress(total=10, stream=screen) as progress:
        progress.update(5)
        progress.update(10)
    assert "10/10" in screen.getvalue() and "img/s" in screen.getvalue()
    assert "<" in screen.getvalue()  # elapsed<remaining: the ETA
    assert not caplog.records  # no log lines besides the bar


def test_captions_are_grouped_by_image_relative_to_the_input_and_next_commands_follow():
    rows = [{"uri": "s3://b/in/cat.jpg", "segment": None, "start_s": None, "end_s": None, "lang": lang,
             "caption": text, "score": -0.25} for lang, text in (("en", "a cat"), ("fr", ""))]
    rows.append({"uri": "s3://b/in/clip.mp4", "segment": 1, "start_s": 10.0, "end_s": 20.0, "lang": "en",
                 "caption": "a dog", "score": -0.5})
    assert format_captions(rows, "s3://b/in/", every=True).splitlines() == [
        "Captions:", "  cat.jpg", "    en  a cat   score -0.25", "    fr  (empty)   score -0.25",
        "  clip.mp4  (10-20 s)", "    en  a dog   score -0.50"]
    assert format_captions([], "in", every=True) == ""
    assert format_captions(rows, "elsewhere", every=False).splitlines()[1] == "  s3://b/in/cat.jpg"
    commands = next_commands("my out/")
    assert "captioner report 'my out' --html report.html" in commands and "captioner query 'my out'" in commands


def test_the_dry_run_says_what_a_run_would_do_and_that_nothing_was_written():
    from captioner.config import ResourceConfig
    from captioner.run.planning import Plan
    from captioner.run.summary import format_plan

    config = RunConfig(input=InputConfig("in"), output="s3://b/out/", resources=ResourceConfig(rows_per_file=100))
    text = format_plan(Plan(listed=10, done=5, failed_for_good=2, todo=3, per_language={"en": 3, "fr": 1},
                            shards=1), config)
    assert text.splitlines()[0] == "dry run: s3://b/out planned; nothing written, no image read"
    assert "failed for good   2   (--retry-errors tries them again)" in text
    assert "to caption        3   (per language: en 3, fr 1)" in text and "shards to write   1   (100 images" in text


def test_the_summary_and_run_record_count_per_language_the_rows_that_read_as_another_language():
    summary = RunSummary(run_id="r1", output="out")
    shard = {"images": 2, "captioned": 2, "failed": 0, "segments": 0, "failed_segments": 0, "captions": 4,
             "empty_captions": 0}
    summary.add({**shard, "languages": '{"en": {"captions": 2, "wrong_language": 0, "not_identified": 1}, '
                                       '"fr": {"captions": 2, "wrong_language": 1, "not_identified": 0}}'})
    summary.add({**shard, "languages": '{"fr": {"captions": 38, "wrong_language": 2, "not_identified": 0}}'})
    text = format_summary(summary)
    assert "fr: 3 of 40 rows look like another language" in text
    assert "en: 0 of 2 rows look like another language (1 not identified" in text
    assert "captioner query out --wrong-language" in text
    assert summary.images == 4 and summary.captions == 8
    assert run_record(summary)["language_check"]["fr"] == {"captions": 40, "wrong_language": 3, "not_identified": 0}


def test_the_summary_says_what_the_fast_paths_checks_cost_and_which_shapes_fell_back():
    summary = RunSummary(run_id="r1", output="out")
    assert "fast path" not in format_summary(summary)  # no check: plain path only, nothing to say
    summary.fast_checks = [{"batch": 8, "tokens": 34, "verdict": "fast", "fast_s": 30.0, "check_s": 0.5},
                           {"batch": 16, "tokens": 34, "verdict": "its tokens differ from plain generate's",
                            "fast_s": 31.0, "check_s": 0.75}]
    text = format_summary(summary)
    assert ("fast path       2 batch shapes checked against plain generate (1.2 s); 1 fell back to the plain path"
            in text)
    assert "batches of 16: its tokens differ from plain generate's" in text
    assert run_record(summary)["fast_checks"][1]["verdict"] == "its tokens differ from plain generate's"
