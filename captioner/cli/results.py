"""``captioner query``, ``stats`` and ``report``: reading an output back. No Ray, no torch."""

import argparse
import contextlib
import json
import logging
import sys

from .options import add_storage_arguments, csv, storage_config

log = logging.getLogger("captioner")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``query``, ``report`` and ``stats``."""
    q = commands.add_parser("query", help="filter the captions (or errors), or run SQL over them",
                            description="Filter committed captions or the error ledger, or run DuckDB SQL over the "
                            "views 'captions' and 'errors'. Results stream, so any output size works.")
    q.add_argument("output", help="folder or s3:// prefix a run wrote to")
    q.add_argument("--lang", type=csv, default=(), help="only these languages, e.g. fr or en,de")
    q.add_argument("--min-score", type=float, help="only captions with score >= this (mean token log-probability)")
    q.add_argument("--contains", help="only captions containing this text (case-insensitive)")
    q.add_argument("--uri", help="only URIs matching this glob, e.g. 's3://bucket/2024/*.jpg'")
    q.add_argument("--run", help="only rows written by this run id")
    q.add_argument("--media", choices=("image", "video"), help="only still images, or only video segments")
    q.add_argument("--at", type=float, metavar="SECONDS", help="only video segments that span this second")
    q.add_argument("--wrong-language", action="store_true",
                   help="only captions that read as another language than their lang (detected_lang)")
    q.add_argument("--errors", action="store_true", help="query the error ledger instead of the captions")
    q.add_argument("--columns", type=csv, help="comma-separated columns to show (default: all)")
    q.add_argument("--limit", type=int, help="at most this many rows")
    q.add_argument("--sql", help="a DuckDB SELECT over the views captions and errors; replaces the filters")
    q.add_argument("--format", choices=("table", "json", "csv", "parquet"), default="table",
                   help="table (default), json (one object per line), csv, or parquet (needs --out)")
    q.add_argument("--out", help="file to write instead of standard output (required for parquet)")
    add_storage_arguments(q)
    q.set_defaults(handler=_query)

    rep = commands.add_parser("report", help="one self-contained HTML page: thumbnails, captions, scores, errors",
                              description="Write a single HTML file (images inline) to look at an output in a "
                              "browser with no server.")
    rep.add_argument("output", help="folder or s3:// prefix a run wrote to")
    rep.add_argument("--html", required=True, help="the HTML file to write, e.g. report.html")
    rep.add_argument("--images", type=int, default=24, help="images in the sample gallery (default: %(default)s)")
    rep.add_argument("--errors", type=int, default=50, help="error rows listed (default: %(default)s)")
    add_storage_arguments(rep)
    rep.set_defaults(handler=_report)

    stats = commands.add_parser("stats", help="what an output holds: images, captions per language, errors, runs",
                                description="Counts from OUTPUT's commit markers and run records.")
    stats.add_argument("output", help="folder or s3:// prefix a run wrote to")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_storage_arguments(stats)
    stats.set_defaults(handler=_stats)


def _query(args: argparse.Namespace) -> int:
    from .. import export, query

    if args.format == "parquet" and not args.out:
        raise query.QueryError("--format parquet writes a file: pass --out results.parquet")
    if args.limit is not None and args.limit < 0:
        raise query.QueryError(f"--limit must be 0 or more, got {args.limit}")
    options = storage_config(args).options(args.output)
    if args.sql:
        reader = query.sql(args.output, args.sql, options)
    else:
        where = query.Filter(lang=args.lang, min_score=args.min_score, contains=args.contains, uri_glob=args.uri,
                             run_id=args.run, media=args.media, at_s=args.at, wrong_language=args.wrong_language)
        columns = list(args.columns) if args.columns else None
        reader = query.select(args.output, where, columns, ledger=args.errors, limit=args.limit, options=options)
    with open(args.out, "wb") if args.out else contextlib.nullcontext(sys.stdout.buffer) as sink:
        rows = export.write(reader, args.format, sink)
    log.info("%d rows", rows)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .. import report

    page = report.render(args.output, storage_config(args), images=args.images, errors=args.errors)
    with open(args.html, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.html} ({len(page) // 1024} KiB); open it in a browser")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .. import query

    figures = query.stats(args.output, storage_config(args).options(args.output))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{args.output}: {figures['images_processed']} images processed in {figures['shards']} shards")
    print(f"  captioned {figures['captioned']}, failed {figures['failed']}, caption rows {figures['caption_rows']}")
    for lang, row in sorted(figures["scores_per_language"].items()):
        clip = f", mean CLIP {row['mean_clip_score']:.2f}" if row["mean_clip_score"] is not None else ""
        empty = f" ({row['empty']} empty)" if row["empty"] else ""
        print(f"  [{lang}] {row['captions']} captions{empty}; score p10 {row['p10']:.2f}, median {row['median']:.2f}, "
              f"p90 {row['p90']:.2f}{clip}")
    for lang, row in sorted(figures["language_check"].items()):
        unknown = f" ({row['not_identified']} not identified)" if row["not_identified"] else ""
        print(f"  [{lang}] {row['wrong_language']} of {row['captions']} rows look like another language{unknown}")
    if any(row["wrong_language"] for row in figures["language_check"].values()):
        print(f"  captioner query {args.output} --wrong-language   # lists them")
    if any(row["not_identified"] for row in figures["language_check"].values()):
        print("  not identified: empty, too short to tell, or written before captioner identified languages")
    for kind, n in sorted(figures["errors_by_type"].items(), key=lambda kv: -kv[1]):
        print(f"  error {kind}: {n}")
    print("runs:")
    for run in figures["runs"]:
        print(f"  {run['run_id']}  {run['status']:<9}  {run['images']:>8} images  {run['failed']:>6} failed  "
              f"{run['elapsed_s']:>8.1f} s  {run['images_per_s']:>7.1f} img/s")
    return 0
