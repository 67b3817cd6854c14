"""Seconds and peak memory of the work that grows with the archive: listing, reading a manifest, planning.

    python benchmarks/scale.py [--sizes 1000000 10000000] [--tree-sizes 1000000] [--new 0.01] [--repeats 3]

For each size N: a Parquet manifest of N image URIs and an output that already holds captions of all but
``--new`` of them (real caption files and commit markers, written directly with pyarrow), then, each in a
fresh process (the peak RSS is that whole process's, imports included; a dry run starts no other process):

  manifest   freeze the manifest file into manifest parts (read in batches)
  plan       the run's plan: DuckDB's anti-join of the frozen manifest against the output, its to-do written
             as Parquet parts
  dry run    ``captioner run MANIFEST OUT --dry-run`` as the CLI runs it: checks, freezing, planning, counts

and, for each of ``--tree-sizes``, listing a local tree of that many empty files (1,000 per folder) into
manifest parts. The table gives medians and the growth factor per decade of N, so 10^8 can be read off.
"""

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq

from captioner import schema
from captioner.config import InputConfig, RunConfig
from captioner.fingerprint import fingerprints
from captioner.store import manifest, state

FILE_ROWS = 1_000_000  # caption rows per committed file of the synthetic output


def uris(start: int, stop: int) -> pa.Array:
    return pa.array([f"s3://archive/photos/{i // 1000:06d}/{i:09d}.jpg" for i in range(start, stop)], pa.string())


def write_inputs(folder: str, n: int, new: float, config: RunConfig) -> tuple[str, str]:
    """(manifest file, output folder) for ``n`` images of which all but ``new`` are captioned in ``en``."""
    path, out = os.path.join(folder, "manifest.parquet"), os.path.join(folder, "out")
    done = n - int(n * new)
    fingerprint = fingerprints(config)["en"]
    identity = schema.MANIFEST.remove(4).remove(3)  # a user's manifest: uri, size, etag
    with pq.ParquetWriter(path, identity) as writer:
        for start in range(0, n, FILE_ROWS):
            stop = min(n, start + FILE_ROWS)
            writer.write_table(pa.table([uris(start, stop), pa.array(range(start, stop), pa.int64()),
                                         pa.array([f"{i:x}" for i in range(start, stop)])], schema=identity))
    for start in range(0, done, FILE_ROWS):
        stop = min(done, start + FILE_ROWS)
        name = f"part-{uuid.uuid4().hex[:24]}.parquet"
        relative = f"{schema.CAPTIONS_DIR}/{schema.LANG}=en/{name}"
        os.makedirs(os.path.join(out, os.path.dirname(relative)), exist_ok=True)
        rows = stop - start

        def constant(field: pa.Field, value) -> pa.Array:
            return pa.nulls(rows, field.type) if value is None else pa.repeat(pa.scalar(value, field.type), rows)

        values = {schema.CAPTION: "a red circle above a blue square", schema.SCORE: -0.4,
                  schema.PRODUCER: schema.NATIVE, schema.NUM_CANDIDATES: 1, schema.WIDTH: 640, schema.HEIGHT: 480,
                  schema.MODEL: "demo", schema.RUN_ID: "bench", schema.FINGERPRINT: fingerprint}
        table = pa.table({
            schema.URI: uris(start, stop), schema.SIZE: pa.array(range(start, stop), pa.int64()),
            schema.ETAG: pa.array([f"{i:x}" for i in range(start, stop)]),
            **{f.name: constant(f, values.get(f.name)) for f in schema.CAPTION_FILE
               if f.name not in (schema.URI, schema.SIZE, schema.ETAG)}}, schema=schema.CAPTION_FILE)
        pq.write_table(table, os.path.join(out, relative))
        state.commit(out, state.Shard(name=name, run_id="bench", files=(relative,), fingerprints={"en": fingerprint},
                                      counts={"images": rows, "captioned": rows, "failed": 0, "captions": rows}))
    return path, out


def write_tree(folder: str, n: int) -> str:
    root = os.path.join(folder, "tree")
    for i in range(n):
        if i % 1000 == 0:
            os.makedirs(os.path.join(root, f"{i // 1000:06d}"))
        open(os.path.join(root, f"{i // 1000:06d}", f"{i:09d}.jpg"), "wb").close()
    return root


def _measured(what: str, config: RunConfig, scratch: str, queue: multiprocessing.Queue) -> None:
    from captioner.run import pipeline, planning

    start = time.perf_counter()
    dest = os.path.join(scratch, uuid.uuid4().hex)
    if what == "dry run":
        plan = pipeline.dry_run(config)
        result = asdict(plan)
    elif what == "plan":
        listed = manifest.freeze(config.input.uri, config.input.extensions, None, os.path.join(dest, "manifest"))
        start = time.perf_counter()
        with planning.plan(config, os.path.join(dest, "manifest"), state.committed(config.output)) as todo:
            parts = planning.write(todo, os.path.join(dest, "todo"), 4096)
            result = {"listed": listed, "todo": todo.rows, "parts": parts}
    else:
        result = {"listed": manifest.freeze(config.input.uri, config.input.extensions, None, dest)}
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **result})


def measure(what: str, config: RunConfig, scratch: str, repeats: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    runs = []
    for _ in range(repeats):
        queue = ctx.Queue()
        child = ctx.Process(target=_measured, args=(what, config, scratch, queue))
        child.start()
        runs.append(queue.get())
        child.join()
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_mib": statistics.median(r["peak_mib"] for r in runs), "runs": runs}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000],
                        help="images in the manifest (and, but for --new, in the output)")
    parser.add_argument("--tree-sizes", type=int, nargs="*", default=[],
                        help="files in the local trees to list (creating them takes a while)")
    parser.add_argument("--new", type=float, default=0.01, help="share of the manifest the output lacks")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is shown")
    args = parser.parse_args(argv)

    results = []
    for n in sorted(set(args.sizes) | set(args.tree_sizes)):
        with tempfile.TemporaryDirectory(prefix="captioner-scale-") as folder:
            config = RunConfig(input=InputConfig("unused"), output=os.path.join(folder, "out"), languages=("en",))
            rows = []
            if n in args.sizes:
                start = time.perf_counter()
                path, out = write_inputs(folder, n, args.new, config)
                print(f"{n:,}: inputs written in {time.perf_counter() - start:.0f} s", file=sys.stderr)
                config = RunConfig(input=InputConfig(path), output=out, languages=("en",))
                rows += [(what, measure(what, config, folder, args.repeats)) for what in ("manifest", "plan", "dry run")]
            if n in args.tree_sizes:
                config = RunConfig(input=InputConfig(write_tree(folder, n)), output=config.output)
                rows.append(("list tree", measure("list tree", config, folder, args.repeats)))
            for what, figures in rows:
                print(f"{n:,} {what}: {figures['seconds']:.1f} s, {figures['peak_mib']:.0f} MiB", file=sys.stderr)
                results.append({"images": n, "what": what, **figures})
    print(f"{'images':>12} {'what':<10} {'seconds':>8} {'peak MiB':>9} {'x time/decade':>14} {'x MiB/decade':>13}")
    for r in results:
        before = next((p for p in results if p["what"] == r["what"] and p["images"] * 10 == r["images"]), None)
        growth = (f"{r['seconds'] / before['seconds']:>14.1f} {r['peak_mib'] / before['peak_mib']:>13.2f}"
                  if before else f"{'':>14} {'':>13}")
        print(f"{r['images']:>12,} {r['what']:<10} {r['seconds']:>8.1f} {r['peak_mib']:>9.0f} {growth}")
    print(json.dumps([{k: v for k, v in r.items()} for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
