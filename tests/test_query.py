import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from captioner import query
from captioner.query import scores
from captioner.store import state, writer
from results import image_results, mixed_output

# What stats and the report computed with DuckDB before scores.summary counted them in two streaming passes.
DUCKDB_SCORES = """
    SELECT lang, count(*) AS captions, min(score) AS min, quantile_cont(score, 0.1) AS p10,
           quantile_cont(score, 0.5) AS median, quantile_cont(score, 0.9) AS p90, max(score) AS max,
           avg(clip_score) AS mean_clip_score, count(*) FILTER (WHERE caption = '') AS empty,
           count(*) FILTER (WHERE detected_lang <> lang) AS wrong_language,
           count(*) FILTER (WHERE detected_lang IS NULL) AS not_identified
    FROM rows GROUP BY lang ORDER BY lang
"""
DUCKDB_HISTOGRAM = """
    WITH bounds AS (SELECT min(score) AS lo, max(score) AS hi FROM rows)
    SELECT lang, least(floor((score - lo) / greatest(hi - lo, 1e-9) * 7), 7 - 1)::INT AS bin, count(*) AS n
    FROM rows, bounds GROUP BY lang, bin ORDER BY lang, bin
"""


def test_sample_returns_rows_of_a_run_or_any(tmp_path):
    writer.write_shard(image_results(["b", "a"], run_id="r1", langs=("en",)), str(tmp_path))
    writer.write_shard(image_results(["c"], run_id="r2", langs=("en",)), str(tmp_path))
    sample = query.sample(str(tmp_path), limit=5, run_id="r1")
    assert [r["uri"] for r in sample] == ["a", "b"] and sample[0]["caption"] == "en a"
    assert len(query.sample(str(tmp_path), limit=2)) == 2
    assert query.sample(str(tmp_path / "nothing"), limit=5) == []


def test_stats_add_up_markers_and_runs(tmp_path):
    writer.write_shard(image_results(["a", "b", "c"], failed={"c": "truncated"}), str(tmp_path))
    stats = query.stats(str(tmp_path))
    assert (stats["images_processed"], stats["captioned"], stats["failed"]) == (3, 2, 1)
    assert stats["captions_per_language"] == {"en": 2, "fr": 2}
    assert stats["errors_by_type"] == {"truncated": 1} and stats["fingerprints"] == ["en:f", "fr:f"]


def test_a_french_row_holding_english_shows_in_stats_and_the_filter_beside_rows_written_before_identification(
        tmp_path):
    mixed_output(tmp_path)
    stats = query.stats(str(tmp_path))
    assert stats["language_check"] == {"en": {"captions": 3, "wrong_language": 0, "not_identified": 1},
                                       "fr": {"captions": 3, "wrong_language": 1, "not_identified": 1}}
    found = query.select(str(tmp_path), query.Filter(wrong_language=True)).read_all().to_pylist()
    assert [(r["uri"], r["lang"], r["detected_lang"]) for r in found] == [("new/b.jpg", "fr", "en")]
    every = query.select(str(tmp_path), query.Filter()).read_all()
    assert every.num_rows == 6 and every["detected_lang"].null_count == 2  # the old shard's rows
    sql = "SELECT uri, lang FROM captions WHERE detected_lang <> lang"
    assert query.sql(str(tmp_path), sql).read_all().to_pylist() == [{"uri": "new/b.jpg", "lang": "fr"}]
    with pytest.raises(query.QueryError, match="--wrong-language"):
        query.Filter(wrong_language=True).expression(ledger=True)


@pytest.mark.parametrize("seed", range(4))
def test_score_figures_equal_duckdbs_exact_quantiles_and_histogram(seed):
    """Ties, interpolation between ranks, scores of any sign and size, null CLIP scores, empty captions."""
    rng = np.random.default_rng(seed)
    n = 400
    scores_ = [rng.normal(-0.8, 0.5, n), rng.choice([-1.5, -0.25, 0.0, 0.3], n), rng.uniform(-1e5, 1e5, n),
               -np.abs(rng.standard_cauchy(n)) * 1e-3][seed]
    rows = pa.table({"lang": rng.choice(["de", "en", "fr"], n), "score": scores_.astype(np.float32),
                     "clip_score": pa.array(rng.random(n).astype(np.float32), mask=rng.random(n) < 0.3),
                     "caption": rng.choice(["", "a red circle", "ein Kreis"], n),
                     "detected_lang": rng.choice(np.array(["de", "en", None], dtype=object), n)})
    per_lang, histogram = scores.summary(lambda columns: pads.dataset(rows).scanner(columns=columns).to_reader(), 7)
    want = {row.pop("lang"): row for row in duckdb.sql(DUCKDB_SCORES).to_arrow_table().to_pylist()}
    assert per_lang.keys() == want.keys()
    for lang, figures in want.items():
        assert per_lang[lang] == pytest.approx(figures, rel=1e-12)  # the mean's sum runs in another order
        assert {k: v for k, v in per_lang[lang].items() if k != "mean_clip_score"} == \
            {k: v for k, v in figures.items() if k != "mean_clip_score"}
    bins: dict = {}
    for lang, b, count in duckdb.sql(DUCKDB_HISTOGRAM).fetchall():
        bins.setdefault(lang, [0] * 7)[b] = count
    assert histogram["counts"] == bins
    assert (histogram["lo"], histogram["hi"]) == (float(rows["score"].to_numpy().min()),
                                                  float(rows["score"].to_numpy().max()))


def test_sql_and_filters_scan_without_keeping_file_footers(tmp_path, monkeypatch):
    """Arrow keeps each scanned file's parsed footer (~50 KB) for a dataset's life unless the scan says not to:
    10^4 files would hold 0.5 GB after one pass. DuckDB, too, must scan through ``ScanOnce.scanner``."""
    writer.write_shard(image_results(["a", "b"]), str(tmp_path))
    calls = []
    scanner = state.ScanOnce.scanner
    monkeypatch.setattr(state.ScanOnce, "scanner", lambda self, *a, **kw: calls.append(kw) or scanner(self, *a, **kw))
    assert query.sql(str(tmp_path), "SELECT count(*) AS n FROM captions").read_all().to_pylist() == [{"n": 4}]
    assert len(calls) == 1 and "columns" in calls[0]  # DuckDB's scan, with the columns it needs
    assert query.select(str(tmp_path), query.Filter(lang=("fr",))).read_all().num_rows == 2
    assert len(calls) > 1


def test_a_scan_gives_arrow_a_part_of_the_output_at_a_time(tmp_path, monkeypatch):
    """Arrow's threaded scan reads ahead of a slow reader (up to about 1 GiB), so it is given a part of the output
    at a time; the parts come out as one scan would."""
    for run in ("r1", "r2", "r3"):
        writer.write_shard(image_results([f"{run}-a", f"{run}-b"], run_id=run), str(tmp_path))
    shards = state.committed(str(tmp_path))
    monkeypatch.setattr(query, "SHARDS_PER_SCAN", 2)
    calls = []
    scanner = state.ScanOnce.scanner
    monkeypatch.setattr(state.ScanOnce, "scanner", lambda self, *a, **kw: calls.append(len(self.files)) or
                        scanner(self, *a, **kw))
    rows = query.scan(str(tmp_path), shards, ["uri", "lang"]).read_all()
    assert calls == [0, 4, 2]  # the schema, then two parts: two shards of two files, one shard
    assert rows.equals(state.captions(str(tmp_path), shards).to_table(columns=["uri", "lang"]))


# Over real output written by the job, locally and on the S3 server.

import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

import pyarrow.compute as pc  # noqa: E402

from captioner import cli  # noqa: E402
from captioner.run import pipeline  # noqa: E402
from captioner.config import GenerationConfig, InputConfig, ModelConfig, RunConfig  # noqa: E402
from conftest import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def job_output(local_ray, tmp_path_factory, s3_server):
    """One real run, en + fr natively, written to a folder, and its output copied to a bucket on the local S3
    server (the run's own S3 writes are tested with the pipeline)."""
    import s3fs

    from conftest import BAD, jpeg_bytes

    root = tmp_path_factory.mktemp("query")
    model = build_tiny_model(root / "model", languages=("en", "fr"))
    photos = root / "photos"
    photos.mkdir()
    for i in range(8):
        (photos / f"{'cat' if i % 3 == 0 else 'img'}{i}.jpg").write_bytes(jpeg_bytes(i))
    for name in BAD:
        (photos / name).write_bytes(b"")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True)
    fs.mkdir("query-bucket")
    outputs = {"local": str(root / "out"), "s3": "s3://query-bucket/out"}
    pipeline.run(RunConfig(input=InputConfig(str(photos)), output=outputs["local"], model=ModelConfig(name=str(model)),
                           generation=GenerationConfig(max_new_tokens=5), languages=("en", "fr")))
    fs.put(outputs["local"] + "/", "query-bucket/out", recursive=True)
    return outputs, s3_server


@pytest.fixture(params=["local", "s3"])
def written(request, job_output):
    outputs, endpoint = job_output
    out = outputs[request.param]
    options = {"endpoint_url": endpoint} if out.startswith("s3://") else {}
    flags = ["--endpoint-url", endpoint] if out.startswith("s3://") else []
    return out, options, flags


def _raw(out, options):
    """The same rows read without captioner: a plain pyarrow dataset over the files."""
    from captioner.store import fs as storage

    fs, root = storage.filesystem(out, options)
    return pads.dataset(root + "/captions", filesystem=fs, format="parquet", partitioning="hive").to_table()


def _keys(rows):
    return sorted((r["uri"], r["lang"]) for r in rows)


def _filters(raw):
    """Each filter with the same selection done in pyarrow, built from the data so none matches nothing."""
    word = raw["caption"][0].as_py().split()[0]
    median = sorted(raw["score"].to_pylist())[raw.num_rows // 2]
    return {
        "lang": (query.Filter(lang=("fr",)), pc.equal(raw["lang"], "fr")),
        "min-score": (query.Filter(min_score=median), pc.greater_equal(raw["score"], median)),
        "contains": (query.Filter(contains=word.upper()), pc.match_substring(raw["caption"], word, ignore_case=True)),
        "uri": (query.Filter(uri_glob="*/cat*.jpg"), pc.match_substring_regex(raw["uri"], r"/cat[^/]*\.jpg$")),
        "lang+contains": (query.Filter(lang=("en",), contains=word),
                          pc.and_(pc.equal(raw["lang"], "en"), pc.match_substring(raw["caption"], word))),
        "no match": (query.Filter(contains="zebra crossing"), pc.match_substring(raw["caption"], "zebra crossing")),
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lang", "min-score", "contains", "uri", "lang+contains", "no match"])
def test_each_filter_returns_exactly_the_expected_rows(written, kind):
    out, options, _ = written
    raw = _raw(out, options)
    where, mask = _filters(raw)[kind]
    want = _keys(raw.filter(mask).to_pylist())
    got = _keys(query.select(out, where, options=options).read_all().to_pylist())
    assert got == want
    assert (len(want) == 0) == (kind == "no match")


@pytest.mark.slow
def test_sql_equals_the_same_filter_in_pyarrow(written):
    out, options, _ = written
    raw = _raw(out, options)
    want = raw.filter(pc.and_(pc.equal(raw["lang"], "fr"), pc.greater_equal(raw["score"], -3.0)))
    got = query.sql(out, "SELECT uri, lang, caption FROM captions WHERE lang = 'fr' AND score >= -3.0",
                    options).read_all()
    assert sorted(got.to_pylist(), key=str) == sorted(want.select(["uri", "lang", "caption"]).to_pylist(), key=str)
    kinds = query.sql(out, "SELECT error_type, count(*) AS n FROM errors GROUP BY 1 ORDER BY 1", options).read_all()
    assert kinds.to_pylist() == [{"error_type": "empty", "n": 3}]


@pytest.mark.slow
def test_cli_json_and_csv_parse_back_to_the_same_rows(written, capsysbinary):
    out, options, flags = written
    want = sorted(_raw(out, options).filter(pc.equal(_raw(out, options)["lang"], "en"))
                  .select(["uri", "caption"]).to_pylist(), key=str)
    assert cli.main(["query", out, "--lang", "en", "--columns", "uri,caption", "--format", "json", *flags]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert sorted((json.loads(line) for line in lines), key=str) == want
    assert cli.main(["query", out, "--lang", "en", "--columns", "uri,caption", "--format", "csv", *flags]) == 0
    rows = list(csv.DictReader(io.StringIO(capsysbinary.readouterr().out.decode())))
    assert sorted(rows, key=str) == want


@pytest.mark.slow
def test_bad_queries_are_one_line_errors(written, caplog):
    out, _, flags = written
    for args in (["--sql", "SELEKT 1"], ["--columns", "uri,nope"], ["--errors", "--lang", "en"],
                 ["--format", "parquet"]):
        caplog.clear()
        assert cli.main(["query", out, *args, *flags]) == 2, args
        ours = [r for r in caplog.records if r.name == "captioner"]
        assert len(ours) == 1 and "\n" not in ours[0].getMessage() and "Traceback" not in caplog.text, args


@pytest.mark.slow
def test_limit_and_parquet_file(written, tmp_path):
    out, _, flags = written
    target = tmp_path / "fr.parquet"
    assert cli.main(["query", out, "--lang", "fr", "--limit", "3", "--format", "parquet", "--out", str(target),
                     *flags]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    assert table.num_rows == 3 and set(table["lang"].to_pylist()) == {"fr"}


def test_media_and_time_filters(tmp_path):
    out = str(tmp_path)
    writer.write_shard(image_results(["photo.jpg"], videos={"clip.mp4": 3}), out)
    def uris(**kw):
        rows = query.select(out, query.Filter(lang=("en",), **kw)).read_all().to_pylist()
        return sorted((r["uri"], r["segment"]) for r in rows)
    assert uris(media="image") == [("photo.jpg", None)]
    assert uris(media="video") == [("clip.mp4", 0), ("clip.mp4", 1), ("clip.mp4", 2)]
    assert uris(at_s=15.0) == [("clip.mp4", 1)]
    with pytest.raises(query.QueryError, match="--media"):
        query.select(out, query.Filter(media="video"), ledger=True)


def test_sample_spreads_over_languages_and_returns_every_row_of_a_small_run(tmp_path):
    writer.write_shard(image_results(["a", "b"], videos={"v.mp4": 2}, langs=("en", "fr")), str(tmp_path))
    every = query.sample(str(tmp_path), limit=8)
    assert [(r["uri"], r["segment"], r["lang"]) for r in every] == [
        ("a", None, "en"), ("a", None, "fr"), ("b", None, "en"), ("b", None, "fr"),
        ("v.mp4", 0, "en"), ("v.mp4", 0, "fr"), ("v.mp4", 1, "en"), ("v.mp4", 1, "fr")]
    few = query.sample(str(tmp_path), limit=3)
    assert len(few) == 3 and {r["lang"] for r in few} == {"en", "fr"}
