"""``captioner run`` and ``captioner submit``: the job's options, locally or on a Ray cluster.

Only argparse and the config dataclasses are imported here; Ray, torch and the pipeline load when a command runs.
"""

import argparse
import os

from ..config import (
    DECODABLE_FORMATS,
    DEFAULT_EXTENSIONS,
    MODES,
    ConfigError,
    DecodeConfig,
    InputConfig,
    ResourceConfig,
    RunConfig,
    VideoConfig,
)
from .model_options import add_model_arguments, model_config
from .options import add_generation_arguments, add_storage_arguments, csv, generation_config, storage_config

SMALL_RUN = 16  # a run of at most this many images shows all its captions at the end
SAMPLE_CAPTIONS = 12  # caption rows shown at the end of a larger run, the languages taking turns


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``run`` and ``submit``."""
    run = commands.add_parser("run", help="caption every image under INPUT into Parquet under OUTPUT",
                              description="Caption every image under INPUT into Parquet under OUTPUT. Connects to "
                              "the Ray cluster in RAY_ADDRESS if set (\"local\": always a new local one), otherwise the "
                              "latest one `ray start` began on this machine, otherwise starts a local one. Rerunning "
                              "the same command captions only what the output does not hold yet.")
    add_run_arguments(run)
    run.add_argument("--dry-run", action="store_true", help="list the input and plan against OUTPUT, then say what "
                     "a run would do (done, failed for good, to caption per language, shards); writes nothing")
    run.set_defaults(handler=_run)

    sub = commands.add_parser("submit", help="run the same job on a Ray cluster through its Job Submission API",
                              description="Submit `captioner run INPUT OUTPUT [options]` to a Ray cluster as a job "
                              "whose working directory is this project. The submission id is derived from the run: "
                              "submitting the same run again attaches to its job instead of starting a second "
                              "writer; after a job ends, the same command resumes it. INPUT and OUTPUT are read "
                              "by the cluster, so use object-store URLs. Credentials come from the cluster's own "
                              "environment (instance role, service account), never from this machine.")
    add_submit_arguments(sub)
    add_run_arguments(sub)
    sub.set_defaults(handler=_submit)


def _concurrency(value: str) -> tuple[int, int | None]:
    low, sep, high = value.partition(":")
    try:
        return int(low), int(high) if sep else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of actors or MIN:MAX, e.g. 4 or 1:8, got {value!r}") from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``captioner run`` (also taken by ``jobs/caption.py``)."""
    parser.add_argument("input", help="folder or s3://bucket/prefix (any fsspec URL; .tar files in it are read "
                        "as WebDataset shards); a .parquet/.csv/.csv.gz/.txt manifest with a 'uri' column or one URI "
                        "per line, or a quoted glob of them ('runs/<id>/manifest/*.parquet'); an S3 Inventory "
                        "manifest.json; or one .tar shard")
    parser.add_argument("output", help="folder or s3:// prefix; receives captions/, errors/ and runs/")

    add_model_arguments(parser)
    add_generation_arguments(parser)

    r = parser.add_argument_group("resources (defaults derive from the cluster)")
    r.add_argument("--concurrency", type=_concurrency, metavar="N|MIN:MAX",
                   help="caption actors, or a range the pool grows in as work waits, so an autoscaling GPU group "
                   "adds nodes, e.g. 1:8 (default: one per GPU, or CPUs/2 on CPU)")
    r.add_argument("--batch-size", type=int, help="images per model call (default: 64 on GPU, 32 on CPU)")
    r.add_argument("--num-gpus", type=float, help="GPUs per caption actor (default: 1 if the cluster has GPUs)")
    r.add_argument("--num-cpus", type=float, help="CPUs per caption actor")
    r.add_argument("--num-threads", type=int, help="torch threads per caption actor on CPU (default: its share of "
                   "all the cluster's cores, since decoding needs little)")
    r.add_argument("--decode-batch-size", type=int, default=ResourceConfig.decode_batch_size,
                   help="images per read+decode task call (default: %(default)s)")
    r.add_argument("--decode-memory-mb", type=int, default=ResourceConfig.decode_memory_mb,
                   help="memory reserved per read+decode task, in MiB (default: %(default)s)")
    r.add_argument("--rows-per-file", type=int, default=ResourceConfig.rows_per_file,
                   help="images per output Parquet shard (default: %(default)s)")

    d = parser.add_argument_group("bad input (each file that breaks a limit becomes one error row)")
    d.add_argument("--image-formats", type=csv, default=DecodeConfig.formats,
                   help="Pillow formats to decode, comma-separated (default: %(default)s); also allowed: "
                   f"{', '.join(f for f in DECODABLE_FORMATS if f not in DecodeConfig.formats)}. Never EPS or "
                   "other formats that run external programs")
    d.add_argument("--max-image-pixels", type=int, default=DecodeConfig.max_pixels,
                   help="width x height as the file's header states it; more is refused as a decompression bomb "
                   "(default: %(default)s)")
    d.add_argument("--max-image-mb", type=int, default=DecodeConfig.max_file_mb,
                   help="bigger files are never read (default: %(default)s MiB)")
    d.add_argument("--decode-timeout-s", type=float, default=DecodeConfig.timeout_s,
                   help="time budget to decode one image; a slower one is stopped (default: %(default)s)")
    d.add_argument("--decode-memory-cap-mb", type=int, default=DecodeConfig.memory_mb,
                   help="memory one image's decode may take, in a child process of the worker (default: "
                   "%(default)s MiB)")

    v = parser.add_argument_group("video (files ending in " + ", ".join(VideoConfig.extensions) + ")")
    v.add_argument("--segment-s", type=float, default=VideoConfig.segment_s,
                   help="seconds per video segment; each segment gets one caption per language, a shorter video "
                   "is one segment (default: %(default)s)")
    v.add_argument("--max-video-s", type=float, default=VideoConfig.max_video_s,
                   help="longer videos are one error row (too_long), never decoded (default: %(default)s)")

    o = parser.add_argument_group("resume and errors")
    o.add_argument("--mode", choices=MODES, default="resume",
                   help="when OUTPUT holds captions made with other settings (model, generation, languages' "
                   "models): resume refuses, append adds this run's alongside, overwrite replaces them once this "
                   "run has finished (default: %(default)s)")
    o.add_argument("--retry-errors", action="store_true",
                   help="try again the images that failed for good before (undecodable...); store failures are "
                   "always retried")
    o.add_argument("--max-error-rate", type=float,
                   help="fail the run (exit 1) when more than this share of its images fail, e.g. 0.05")

    s = add_storage_arguments(parser)
    s.add_argument("--extensions", type=csv, default=DEFAULT_EXTENSIONS,
                   help="file endings listed, images and videos (default: %(default)s)")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``captioner submit`` itself; every other option goes to the job's ``captioner run``."""
    c = parser.add_argument_group("cluster")
    c.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                   help="the Ray dashboard of the cluster, e.g. http://HEAD:8265 (default: RAY_ADDRESS). With token "
                   "authentication the token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    c.add_argument("--wait", action="store_true",
                   help="follow the job's logs until it ends and exit with its status (default: return once submitted)")
    c.add_argument("--working-dir", help="project folder uploaded as the job's working directory (default: the "
                   "checkout this captioner runs from)")


def run_config(args: argparse.Namespace) -> RunConfig:
    """Plain values from the parsed arguments into the frozen configs the pipeline takes."""
    return RunConfig(
        input=InputConfig(uri=args.input, extensions=tuple(e if e.startswith(".") else f".{e}" for e in args.extensions)),
        output=args.output,
        model=model_config(args),
        generation=generation_config(args),
        languages=args.languages,
        translate=tuple(pair for group in args.translate for pair in group),
        source_language=args.source_language,
        clip_model=args.clip_model,
        num_candidates=args.num_candidates,
        resources=ResourceConfig(concurrency=args.concurrency and args.concurrency[0],
                                 max_concurrency=args.concurrency and args.concurrency[1],
                                 batch_size=args.batch_size, num_gpus=args.num_gpus,
                                 num_cpus=args.num_cpus, num_threads=args.num_threads,
                                 decode_batch_size=args.decode_batch_size,
                                 decode_memory_mb=args.decode_memory_mb,
                                 rows_per_file=args.rows_per_file),
        storage=storage_config(args),
        decode=DecodeConfig(formats=tuple(f.upper() for f in args.image_formats), max_pixels=args.max_image_pixels,
                            max_file_mb=args.max_image_mb, timeout_s=args.decode_timeout_s,
                            memory_mb=args.decode_memory_cap_mb),
        video=VideoConfig(segment_s=args.segment_s, max_video_s=args.max_video_s),
        mode=args.mode,
        retry_errors=args.retry_errors,
        max_error_rate=args.max_error_rate,
    )


def _run(args: argparse.Namespace) -> int:
    from .. import query
    from ..run import pipeline
    from ..run.summary import format_captions, format_plan, format_summary, next_commands

    config = run_config(args)
    if args.dry_run:
        print(format_plan(pipeline.dry_run(config), config))
        return 0
    summary = pipeline.run(config)
    every = summary.captions > 0 and summary.images <= SMALL_RUN
    options = config.storage.options(summary.output)
    rows = query.sample(summary.output, summary.captions if every else SAMPLE_CAPTIONS,
                        summary.run_id if summary.captions else None, options)
    print("\n\n".join(part for part in (format_summary(summary), format_captions(rows, config.input.uri, every),
                                          next_commands(summary.output)) if part))
    return 0


def _submit(args: argparse.Namespace) -> int:
    from .. import submit

    if not args.address:
        raise ConfigError("--address is required (or set RAY_ADDRESS), e.g. --address http://HEAD:8265")
    config = run_config(args)
    config.validate()
    own = argparse.ArgumentParser(add_help=False)
    add_submit_arguments(own)
    _, run_argv = own.parse_known_args(args.argv[args.argv.index("submit") + 1:])
    return submit.submit(args.address, config, run_argv, wait=args.wait, working_dir=args.working_dir,
                         verbose=args.verbose)
