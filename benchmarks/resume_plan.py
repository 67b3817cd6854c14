"""How long and how much memory planning a resume takes against a large finished output.

    python benchmarks/resume_plan.py [--done 1000000] [--new 10000] [--languages en,fr] [--repeats 3]

Writes an output that already holds --done captioned images (real shards and commit markers, written
by captioner's writer; no model is needed), then plans a run over a listing of those images plus --new
unseen ones: read the markers, the committed caption keys, and subtract. Each plan runs in a fresh
process; the table gives the median seconds and the median peak RSS of that process above its
resting size after imports. A JSON line follows the table.
"""

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time

import pyarrow as pa

from captioner import schema
from captioner.run import planning
from captioner.store import state, writer
from captioner.config import InputConfig, RunConfig
from captioner.fingerprint import fingerprints

SHARD = 1024


def uri(i: int) -> str:
    return f"s3://archive/photos/{i // 1000:06d}/{i:09d}.jpg"


def write_output(out: str, done: int, languages: tuple[str, ...], fingerprints: dict[str, str]) -> None:
    for start in range(0, done, SHARD):
        n = min(SHARD, done - start)
        results = [[{schema.LANG: lang, schema.CAPTION: "a red circle above a blue square", schema.SCORE: -0.4,
                     schema.PRODUCER: schema.NATIVE, schema.NUM_CANDIDATES: 1, schema.FINGERPRINT: fingerprints[lang]}
                    for lang in languages]] * n
        images = pa.table({
            schema.URI: [uri(i) for i in range(start, start + n)],
            schema.SIZE: pa.array([100_000 + i for i in range(start, start + n)], pa.int64()),
            schema.ETAG: [f"{i:032x}" for i in range(start, start + n)],
            schema.WIDTH: pa.array([640] * n, pa.int32()),
            schema.HEIGHT: pa.array([480] * n, pa.int32()),
            schema.MODEL: ["demo"] * n,
            schema.MODEL_REVISION: pa.nulls(n, pa.string()),
            schema.RUN_ID: ["bench"] * n,
            schema.RESULTS: pa.array(results, pa.list_(schema.CAPTION_RESULT)),
            schema.ERROR_TYPE: pa.nulls(n, pa.string()),
            schema.ERROR: pa.nulls(n, pa.string()),
            schema.ATTEMPT: pa.nulls(n, pa.int32()),
        }, schema=schema.IMAGE_RESULT)
        writer.write_shard(images, out)


def listing(total: int) -> pa.Table:
    return pa.table({
        schema.URI: [uri(i) for i in range(total)],
        schema.SIZE: pa.array([100_000 + i for i in range(total)], pa.int64()),
        schema.ETAG: [f"{i:032x}" for i in range(total)],
    }, schema=schema.MANIFEST)


def _plan(out: str, config: RunConfig, total: int, queue: multiprocessing.Queue) -> None:
    items = listing(total)
    rest = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    todo = planning.plan(config, items, state.committed(out))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"seconds": seconds, "peak_mib": (peak - rest) / 1024, "todo": todo.num_rows})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--done", type=int, default=1_000_000, help="images already captioned in the output")
    parser.add_argument("--new", type=int, default=10_000, help="images in the listing the output lacks")
    parser.add_argument("--languages", default="en", help="languages each done image has")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    languages = tuple(args.languages.split(","))

    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(input=InputConfig("unused"), output=out, languages=languages)
        start = time.perf_counter()
        write_output(out, args.done, languages, fingerprints(config))
        print(f"wrote {args.done} done images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        ctx = multiprocessing.get_context("spawn")
        runs = []
        for _ in range(args.repeats):
            queue = ctx.Queue()
            child = ctx.Process(target=_plan, args=(out, config, args.done + args.new, queue))
            child.start()
            runs.append(queue.get())
            child.join()
    assert all(r["todo"] == args.new for r in runs), runs
    seconds = statistics.median(r["seconds"] for r in runs)
    peak = statistics.median(r["peak_mib"] for r in runs)
    print(f"{'done images':>12} {'listed':>10} {'to do':>8} {'plan s':>8} {'peak MiB':>9}")
    print(f"{args.done:>12} {args.done + args.new:>10} {args.new:>8} {seconds:>8.2f} {peak:>9.0f}")
    print(json.dumps({"done": args.done, "listed": args.done + args.new, "todo": args.new,
                      "plan_seconds_median": seconds, "plan_peak_mib_median": peak, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
