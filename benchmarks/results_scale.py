"""Do ``stats``, ``query`` and ``report`` stay streaming on a large output? Seconds and peak memory per command.

    python benchmarks/results_scale.py [--rows 1000000] [--languages en,fr] [--out /tmp/captioner-results-1000000]
    python benchmarks/results_scale.py --rows 10000000 --repeat 3

Builds (or reuses, when --out already holds committed shards) an output of --rows caption rows: --rows /
languages images, --error-rate of them failed, written by captioner's own writer (``writer.write_shard``: real
Parquet shards of --rows-per-file images, CAPTION_FILE and ERROR_FILE schemas, commit markers written last) and
two run records. The rows are made with pyarrow and numpy vector operations, a shard at a time, in --workers
processes. URIs name files that do not exist, so the report shows "image unavailable" instead of thumbnails.

Then runs each command as a fresh ``python -m captioner.cli`` child, --repeat times, and prints its median wall
time and the median of its peak RSS (``ru_maxrss`` of that child, from ``os.wait4`` in a bare launcher), then a
JSON line. The start-up row (``query --help``) is the resting size of the command after its imports.
"""

import argparse
import json
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from captioner import schema
from captioner.store import state, writer

RUNS = ("20250101T000000Z-aaaaaa", "20250102T000000Z-bbbbbb")  # the shards take turns
TRANSLATOR = "facebook/m2m100_418M"  # the producer of every language after the first
WORDS = {  # colours, shapes, relations: the captions of a language are made of its own words
    "en": (["red", "green", "blue", "yellow", "black", "white", "orange", "purple"],
           ["circle", "square", "triangle", "star", "diamond"], ["above", "below", "left of", "right of"]),
    "fr": (["rouge", "vert", "bleu", "jaune", "noir", "blanc", "orange", "violet"],
           ["cercle", "carré", "triangle", "étoile", "losange"], ["au-dessus d'", "sous", "à gauche d'", "à droite d'"]),
    "de": (["roter", "grüner", "blauer", "gelber", "schwarzer", "weißer", "oranger", "lila"],
           ["Kreis", "Quadrat", "Dreieck", "Stern", "Diamant"], ["über", "unter", "links von", "rechts von"]),
}
ERROR_TYPES = ["not_an_image", "truncated", "read_error", "too_large"]


def _padded(numbers: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")


def _pick(words: list[str], rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(words, pa.string()).take(pa.array(rng.integers(0, len(words), n)))


def _captions(lang: str, rng: np.random.Generator, n: int) -> pa.Array:
    """'a red circle above a blue square', in the language's words; one in a thousand empty."""
    colours, shapes, relations = WORDS.get(lang, WORDS["en"])
    text = pc.binary_join_element_wise("a", _pick(colours, rng, n), _pick(shapes, rng, n), _pick(relations, rng, n),
                                       "a", _pick(colours, rng, n), _pick(shapes, rng, n), " ")
    return pc.if_else(pa.array(rng.random(n) < 0.001), "", text)


def image_results(shard: int, first: int, n: int, langs: list[str], error_rate: float) -> pa.Table:
    """What caption actors hand the writer for images ``first`` .. ``first + n - 1``: IMAGE_RESULT rows."""
    rng = np.random.default_rng(shard)
    ids = np.arange(first, first + n)
    failed = rng.random(n) < error_rate
    ok = int((~failed).sum())
    results = pa.StructArray.from_arrays([
        pa.concat_arrays([_captions(lang, rng, ok) for lang in langs]),
        pa.array(np.clip(rng.normal(-0.8, 0.45, ok * len(langs)), None, 0.0).astype(np.float32)),
        pa.array(np.repeat([schema.NATIVE] + [TRANSLATOR] * (len(langs) - 1), ok)),
        pa.array(np.repeat([None] + [langs[0]] * (len(langs) - 1), ok), pa.string()),
        pa.array(rng.uniform(0.2, 1.0, ok * len(langs)).astype(np.float32)),
        pa.array(np.ones(ok * len(langs), np.int32)),
        pa.array(np.repeat([f"{lang}-fp0" for lang in langs], ok)),
        pa.array(np.repeat(langs, ok)),
    ], fields=list(schema.CAPTION_RESULT))
    # image k's captions: its own row in each language block, so the list is rebuilt by a take
    order = (np.arange(ok)[:, None] + ok * np.arange(len(langs))[None, :]).ravel()
    offsets = np.concatenate([[0], np.cumsum(np.where(failed, 0, len(langs)))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), results.take(pa.array(order)), mask=pa.array(failed))
    kinds = pa.array(ERROR_TYPES).take(pa.array(rng.integers(0, len(ERROR_TYPES), n)))
    no_string = pa.scalar(None, pa.string())
    columns = {
        schema.URI: pc.binary_join_element_wise("/data/photos/", _padded(ids // 1000, 6), "/",
                                                 _padded(ids, 9), ".jpg", ""),
        schema.SIZE: pa.array(rng.integers(20_000, 3_000_000, n)),
        schema.ETAG: pc.binary_join_element_wise("e", _padded(ids * 7919, 31), ""),
        schema.WIDTH: pa.array(rng.choice([640, 1024, 1920, 4000], n).astype(np.int32)),
        schema.HEIGHT: pa.array(rng.choice([480, 768, 1080, 3000], n).astype(np.int32)),
        schema.MODEL: pa.array(["nlpconnect/vit-gpt2-image-captioning"] * n),
        schema.RUN_ID: pa.array([RUNS[shard % 2]] * n),
        schema.RESULTS: lists,
        schema.ERROR_TYPE: pc.if_else(pa.array(failed), kinds, no_string),
        schema.ERROR: pc.if_else(pa.array(failed), pc.binary_join_element_wise("cannot decode:", kinds, " "),
                                 no_string),
        schema.ATTEMPT: pa.array(np.ones(n, np.int32), mask=~failed),
    }
    # still images: no segment, and a null ``counted`` counts each row's file
    return pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema.IMAGE_RESULT},
                    schema=schema.IMAGE_RESULT)


def _write_shard(task: tuple[str, int, int, int, list[str], float]) -> dict[str, int]:
    out, shard, first, n, langs, error_rate = task
    return {"run": RUNS[shard % 2], **writer.write_shard(image_results(shard, first, n, langs, error_rate), out)}


def build(out: str, rows: int, langs: list[str], error_rate: float, rows_per_file: int, workers: int) -> None:
    images = rows // len(langs)
    tasks = [(out, k, first, min(rows_per_file, images - first), langs, error_rate)
             for k, first in enumerate(range(0, images, rows_per_file))]
    started = time.perf_counter()
    totals: dict[str, dict[str, int]] = {run: {} for run in RUNS}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for counts in pool.imap_unordered(_write_shard, tasks, chunksize=16):
            total = totals[counts.pop("run")]
            for key, value in counts.items():
                total[key] = total.get(key, 0) + value
    elapsed = time.perf_counter() - started
    for run, total in totals.items():  # the fields of a run record that stats and report read
        done = total.get("images", 0)
        state.write_run_record(out, run, {
            schema.RUN_ID: run, "output": out, "status": "finished", "listed": done, "skipped": 0, **total,
            "elapsed_s": elapsed / 2, "images_per_s": done / max(elapsed / 2, 1e-9),
            "schema_version": schema.SCHEMA_VERSION})
    print(f"wrote {len(tasks)} shards of {images} images in {elapsed:.0f} s", file=sys.stderr)


# Forks and waits for the command, then prints "seconds maxrss_kib exit_status". A child's peak RSS counts the
# memory of the process it was forked from, so the command is forked from this bare interpreter, never from the
# benchmark, which holds pyarrow and the marker list.
LAUNCHER = """import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one fresh child running ``command``; its standard output is thrown away."""
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *command], capture_output=True, text=True)
    seconds, kib, status = done.stdout.split()
    if int(status) != 0:
        sys.exit(f"{shlex.join(command)} failed ({status}):\n{done.stderr[-3000:]}")
    return float(seconds), int(kib) / 1024


def commands(out: str, langs: list[str], scratch: str) -> dict[str, list[str]]:
    other = langs[1] if len(langs) > 1 else langs[0]
    word = WORDS.get(other, WORDS["en"])[1][0]
    return {
        "start-up (query --help)": ["query", "--help"],
        "stats": ["stats", out],
        "query lang+score limit 20": ["query", out, "--lang", other, "--min-score", "-0.5", "--limit", "20"],
        "query contains -> parquet": ["query", out, "--contains", word, "--format", "parquet",
                                      "--out", f"{scratch}/q.parquet"],
        "query uri glob -> csv": ["query", out, "--uri", "*/000123/*", "--format", "csv", "--out", os.devnull],
        "query --sql group by": ["query", out, "--sql", "SELECT lang, count(*) AS n, avg(score) AS mean_score "
                                 "FROM captions GROUP BY lang ORDER BY lang"],
        "report": ["report", out, "--html", f"{scratch}/page.html"],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="caption rows in all (images x languages)")
    parser.add_argument("--languages", default="en,fr", help="languages of every captioned image")
    parser.add_argument("--out", help="the output to build or reuse (default: /tmp/captioner-results-ROWS)")
    parser.add_argument("--error-rate", type=float, default=0.01, help="share of the images that failed")
    parser.add_argument("--rows-per-file", type=int, default=1024, help="images per shard, as the run's default")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes writing shards")
    parser.add_argument("--repeat", "--repeats", dest="repeat", type=int, default=3, help="runs of each command")
    args = parser.parse_args(argv)
    langs = args.languages.split(",")
    out = args.out or f"/tmp/captioner-results-{args.rows}"

    if os.path.isdir(os.path.join(out, schema.COMMITS_DIR)):
        print(f"reusing {out}", file=sys.stderr)
    else:
        build(out, args.rows, langs, args.error_rate, args.rows_per_file, args.workers)
    shards = state.committed(out)
    rows = sum(s.counts.get("captions", 0) for s in shards)
    size = sum(p.stat().st_size for p in Path(out).rglob("*.parquet"))
    print(f"{out}: {rows} caption rows, {len(shards)} shards, {size / 2**20:.0f} MiB of Parquet", file=sys.stderr)

    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in commands(out, langs, scratch).items():
            runs = [measure([sys.executable, "-m", "captioner.cli", *command]) for _ in range(args.repeat)]
            figures[name] = {"seconds": statistics.median(s for s, _ in runs),
                             "peak_mib": statistics.median(m for _, m in runs),
                             "command": shlex.join(["captioner", *command]).replace(scratch, "TMP")}
            print(f"  {name}: {figures[name]['seconds']:.2f} s, {figures[name]['peak_mib']:.0f} MiB", file=sys.stderr)
    print(f"{rows} caption rows, medians of {args.repeat} runs")
    print(f"{'command':28} {'seconds':>8} {'peak MiB':>9}")
    for name, figure in figures.items():
        print(f"{name:28} {figure['seconds']:>8.2f} {figure['peak_mib']:>9.0f}")
    print(json.dumps({"rows": rows, "shards": len(shards), "parquet_mib": round(size / 2**20), "commands": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
