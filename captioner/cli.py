"""The ``captioner`` command: parse options into config dataclasses, run, print a summary."""

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__, export, pipeline, query, report, schema, submit
from .config import (
    DEFAULT_EXTENSIONS,
    DECODABLE_FORMATS,
    DEMO_MODEL,
    MODES,
    RETRY_MODES,
    ConfigError,
    DecodeConfig,
    GenerationConfig,
    InputConfig,
    ModelConfig,
    ResourceConfig,
    RunConfig,
    StorageConfig,
)
from .manifest import InputError
from .model import ModelError
from .output import OutputBusy
from .query import QueryError
from .storage import StoreError
from .submit import SubmitError
from .train import TrainConfig, train, train_distributed
from .pipeline import RunFailed

log = logging.getLogger("captioner")

SAMPLE_CAPTIONS = 8
# Store clients that log request headers (the access key id, signatures) at debug level: kept out of -v.
QUIET_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "aiohttp")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _translation(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in _csv(value):
        lang, sep, model = part.partition("=")
        if not sep or not lang.strip() or not model.strip():
            raise argparse.ArgumentTypeError(f"expected LANG=MODEL, e.g. fr=Helsinki-NLP/opus-mt-en-fr, got {part!r}")
        pairs.append((lang.strip(), model.strip()))
    return tuple(pairs)


def _concurrency(value: str) -> tuple[int, int | None]:
    low, sep, high = value.partition(":")
    try:
        return int(low), int(high) if sep else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of actors or MIN:MAX, e.g. 4 or 1:8, got {value!r}") from None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``captioner run`` (also taken by ``jobs/caption.py``)."""
    parser.add_argument("input", help="folder, s3://bucket/prefix (any fsspec URL), or a .parquet/.csv/.txt "
                        "manifest with a 'uri' column or one URI per line")
    parser.add_argument("output", help="folder or s3:// prefix; receives captions/, errors/ and runs/")

    m = parser.add_argument_group("model")
    m.add_argument("--model", default=DEMO_MODEL, help="Hugging Face hub id, local folder or s3:// folder of a "
                   "VisionEncoderDecoder checkpoint in safetensors (default: the bundled demo model)")
    m.add_argument("--revision", help="hub branch, tag or commit of --model")
    m.add_argument("--model-cache", default=ModelConfig.cache_dir,
                   help="where each node keeps its copy of an object-store model (default: %(default)s)")
    m.add_argument("--languages", type=_csv, default=("en",),
                   help="comma-separated language codes, one caption row each (default: en). A language the "
                   "captioner has a language token for is written natively, others need --translate")
    m.add_argument("--translate", type=_translation, action="append", default=[], metavar="LANG=MODEL[,LANG=MODEL]",
                   help="write LANG by translating the source caption with a sequence-to-sequence model (hub id, "
                   "folder or s3:// folder, MarianMT style, e.g. fr=Helsinki-NLP/opus-mt-en-fr); repeatable")
    m.add_argument("--source-language", default=RunConfig.source_language,
                   help="language that translations start from; must be in --languages (default: %(default)s)")
    m.add_argument("--clip-model", help="CLIP model (hub id, folder or s3:// folder) that fills clip_score: "
                   "2.5 * max(cosine(image, caption), 0)")
    m.add_argument("--num-candidates", type=int, default=RunConfig.num_candidates,
                   help="generate N captions per image and language and keep the best by CLIP score "
                   "(needs --clip-model; default: %(default)s)")
    m.add_argument("--allow-pickle-weights", action="store_true",
                   help="load checkpoints that have only pickle weights (pytorch_model.bin). Unpickling can run "
                   "code, so only for checkpoints you trust; by default only safetensors load")

    g = parser.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=GenerationConfig.max_new_tokens,
                   help="longest caption, in tokens (default: %(default)s)")
    g.add_argument("--num-beams", type=int, default=GenerationConfig.num_beams,
                   help="beam search width; 1 is greedy decoding (default: %(default)s)")
    g.add_argument("--temperature", type=float, help="sample with this temperature instead of greedy/beam search")
    g.add_argument("--top-p", type=float, help="sample from the smallest token set with this probability mass")
    g.add_argument("--seed", type=int, default=GenerationConfig.seed,
                   help="seed for sampling; the same seed gives the same captions (default: %(default)s)")

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
    d.add_argument("--image-formats", type=_csv, default=DecodeConfig.formats,
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
    s.add_argument("--extensions", type=_csv, default=DEFAULT_EXTENSIONS,
                   help="file endings listed as images (default: %(default)s)")


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


def add_storage_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    s = parser.add_argument_group("storage (credentials: AWS environment variables or profiles)")
    s.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 for MinIO")
    s.add_argument("--anon", action="store_true", help="unsigned S3 requests, for public buckets")
    s.add_argument("--profile", help="AWS profile name from ~/.aws/config")
    s.add_argument("--store-max-attempts", type=int, default=StorageConfig.max_attempts,
                   help="tries per S3 request when the store throttles (503 SlowDown), resets or times out, "
                   "with jittered exponential backoff (default: %(default)s)")
    s.add_argument("--store-retry-mode", choices=RETRY_MODES, default=StorageConfig.retry_mode,
                   help="botocore retry mode; adaptive also slows this client down while throttled "
                   "(default: %(default)s)")
    return s


def _storage(args: argparse.Namespace) -> StorageConfig:
    return StorageConfig(endpoint_url=args.endpoint_url, anon=args.anon, profile=args.profile,
                         max_attempts=args.store_max_attempts, retry_mode=args.store_retry_mode)


def run_config(args: argparse.Namespace) -> RunConfig:
    """Plain values from the parsed arguments into the frozen configs the pipeline takes."""
    return RunConfig(
        input=InputConfig(uri=args.input, extensions=tuple(e if e.startswith(".") else f".{e}" for e in args.extensions)),
        output=args.output,
        model=ModelConfig(name=args.model, revision=args.revision, cache_dir=args.model_cache,
                          allow_pickle_weights=args.allow_pickle_weights),
        generation=GenerationConfig(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                    temperature=args.temperature, top_p=args.top_p, seed=args.seed),
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
        storage=_storage(args),
        decode=DecodeConfig(formats=tuple(f.upper() for f in args.image_formats), max_pixels=args.max_image_pixels,
                            max_file_mb=args.max_image_mb, timeout_s=args.decode_timeout_s,
                            memory_mb=args.decode_memory_cap_mb),
        mode=args.mode,
        retry_errors=args.retry_errors,
        max_error_rate=args.max_error_rate,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Batch, offline, multilingual image captioning "
                                     "into Parquet, on one machine or a Ray cluster.")
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="caption every image under INPUT into Parquet under OUTPUT",
                              description="Caption every image under INPUT into Parquet under OUTPUT. Connects to "
                              "the Ray cluster in RAY_ADDRESS if set, otherwise starts a local one. Rerunning "
                              "the same command captions only what the output does not hold yet.")
    add_run_arguments(run)
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

    q = commands.add_parser("query", help="filter the captions (or errors), or run SQL over them",
                            description="Filter committed captions or the error ledger, or run DuckDB SQL over the "
                            "views 'captions' and 'errors'. Results stream, so any output size works.")
    q.add_argument("output", help="folder or s3:// prefix a run wrote to")
    q.add_argument("--lang", type=_csv, default=(), help="only these languages, e.g. fr or en,de")
    q.add_argument("--min-score", type=float, help="only captions with score >= this (mean token log-probability)")
    q.add_argument("--contains", help="only captions containing this text (case-insensitive)")
    q.add_argument("--uri", help="only URIs matching this glob, e.g. 's3://bucket/2024/*.jpg'")
    q.add_argument("--run", help="only rows written by this run id")
    q.add_argument("--errors", action="store_true", help="query the error ledger instead of the captions")
    q.add_argument("--columns", type=_csv, help="comma-separated columns to show (default: all)")
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

    tr = commands.add_parser("train", help="train or fine-tune a captioner on (image, caption, lang) rows",
                             description="Train a VisionEncoderDecoder captioner (ViT encoder, GPT-2 decoder, "
                             "cross-attention) in staged steps, with validation loss, perplexity and BLEU per epoch "
                             "and resumable safetensors checkpoints. With --workers it runs under Ray Train.")
    tr.add_argument("--data", required=True, help="Parquet file or folder (local or s3://) with columns image "
                    "(encoded bytes), caption and lang")
    tr.add_argument("--output-dir", required=True, help="local folder that receives the model, tokenizer and "
                    "image processor")
    tr.add_argument("--checkpoint-dir", help="resumable checkpoints (default: OUTPUT_DIR/checkpoints); rerun the "
                    "same command to resume after an interruption")
    tr.add_argument("--init-model", help="a trained captioner to continue from, e.g. to add a language")
    tr.add_argument("--encoder", help="pretrained ViT (hub id or folder); only cross-attention starts fresh")
    tr.add_argument("--decoder", help="pretrained GPT-2 with its tokenizer (hub id or folder); keeps its LM head")
    tr.add_argument("--encoder-pretrain-epochs", type=int, default=TrainConfig.encoder_pretrain_epochs,
                    help="a fresh encoder first learns alone for this many epochs (default: %(default)s)")
    tr.add_argument("--image-size", type=int, default=TrainConfig.image_size,
                    help="input side in pixels of a fresh encoder (default: %(default)s)")
    tr.add_argument("--patch-size", type=int, default=TrainConfig.patch_size,
                    help="ViT patch side in pixels (default: %(default)s)")
    tr.add_argument("--stage-epochs", type=int, nargs=3, default=TrainConfig.stage_epochs,
                    metavar=("CROSS", "DECODER", "ALL"),
                    help="epochs training cross-attention only, then with the decoder, then everything "
                    "(default: %(default)s)")
    tr.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                    help="images per optimizer step per worker (default: %(default)s)")
    tr.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate,
                    help="peak learning rate; linear warm-up then cosine decay (default: %(default)s)")
    tr.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction,
                    help="share of images held out for validation loss, perplexity and BLEU (default: %(default)s)")
    tr.add_argument("--num-threads", type=int, help="torch CPU threads per process")
    tr.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed for the split, init and shuffling")
    tr.add_argument("--stop-after-steps", type=int, help="stop after this many steps, leaving a checkpoint")
    tr.add_argument("--workers", type=int, default=0, help="Ray Train workers; 0 trains in this process")
    tr.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker")
    add_storage_arguments(tr)
    tr.set_defaults(handler=_train)

    stats = commands.add_parser("stats", help="what an output holds: images, captions per language, errors, runs",
                                description="Counts from OUTPUT's commit markers and run records.")
    stats.add_argument("output", help="folder or s3:// prefix a run wrote to")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_storage_arguments(stats)
    stats.set_defaults(handler=_stats)
    return parser


def _run(args: argparse.Namespace) -> int:
    config = run_config(args)
    summary = pipeline.run(config)
    print(format_summary(summary))
    options = config.storage.options(summary.output)
    samples = query.sample(summary.output, SAMPLE_CAPTIONS, summary.run_id if summary.captions else None, options)
    if samples:
        print("\nA few captions:")
        for row in samples:
            print(f"  [{row[schema.LANG]}] {row[schema.CAPTION]!r}  (score {row[schema.SCORE]:.2f})  {row[schema.URI]}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    if not args.address:
        raise ConfigError("--address is required (or set RAY_ADDRESS), e.g. --address http://HEAD:8265")
    config = run_config(args)
    config.validate()
    own = argparse.ArgumentParser(add_help=False)
    add_submit_arguments(own)
    _, run_argv = own.parse_known_args(args.argv[args.argv.index("submit") + 1:])
    return submit.submit(args.address, config, run_argv, wait=args.wait, working_dir=args.working_dir,
                         verbose=args.verbose)


def _query(args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.out:
        raise query.QueryError("--format parquet writes a file: pass --out results.parquet")
    if args.limit is not None and args.limit < 0:
        raise query.QueryError(f"--limit must be 0 or more, got {args.limit}")
    options = _storage(args).options(args.output)
    if args.sql:
        reader = query.sql(args.output, args.sql, options)
    else:
        where = query.Filter(lang=args.lang, min_score=args.min_score, contains=args.contains, uri_glob=args.uri,
                             run_id=args.run)
        columns = list(args.columns) if args.columns else None
        reader = query.select(args.output, where, columns, ledger=args.errors, limit=args.limit, options=options)
    with open(args.out, "wb") if args.out else contextlib.nullcontext(sys.stdout.buffer) as sink:
        rows = export.write(reader, args.format, sink)
    log.info("%d rows", rows)
    return 0


def _train(args: argparse.Namespace) -> int:
    try:
        config = TrainConfig(
            data=args.data, output_dir=args.output_dir, checkpoint_dir=args.checkpoint_dir, storage=_storage(args),
            init_model=args.init_model, encoder=args.encoder, decoder=args.decoder,
            encoder_pretrain_epochs=args.encoder_pretrain_epochs, image_size=args.image_size,
            patch_size=args.patch_size, stage_epochs=tuple(args.stage_epochs), batch_size=args.batch_size,
            learning_rate=args.learning_rate, val_fraction=args.val_fraction, num_threads=args.num_threads,
            seed=args.seed, stop_after_steps=args.stop_after_steps,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.workers:
        import ray

        ray.init(address=os.environ.get("RAY_ADDRESS"))
        metrics = train_distributed(config, num_workers=args.workers, use_gpu=args.gpu)
    else:
        metrics = train(config)
    print(json.dumps(metrics, indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    page = report.render(args.output, _storage(args), images=args.images, errors=args.errors)
    with open(args.html, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {args.html} ({len(page) // 1024} KiB); open it in a browser")
    return 0


def _stats(args: argparse.Namespace) -> int:
    figures = query.stats(args.output, _storage(args).options(args.output))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{args.output}: {figures['images_processed']} images processed in {figures['shards']} shards")
    print(f"  captioned {figures['captioned']}, failed {figures['failed']}, caption rows {figures['caption_rows']}")
    for lang, row in sorted(figures["scores_per_language"].items()):
        clip = f", mean CLIP {row['mean_clip_score']:.2f}" if row["mean_clip_score"] is not None else ""
        print(f"  [{lang}] {row['captions']} captions; score p10 {row['p10']:.2f}, median {row['median']:.2f}, "
              f"p90 {row['p90']:.2f}{clip}")
    for kind, n in sorted(figures["errors_by_type"].items(), key=lambda kv: -kv[1]):
        print(f"  error {kind}: {n}")
    print("runs:")
    for run in figures["runs"]:
        print(f"  {run['run_id']}  {run['status']:<9}  {run['images']:>8} images  {run['failed']:>6} failed  "
              f"{run['elapsed_s']:>8.1f} s  {run['images_per_s']:>7.1f} img/s")
    return 0


def format_summary(summary: pipeline.RunSummary) -> str:
    return "\n".join([
        f"run {summary.run_id}: {summary.status}",
        f"  images listed   {summary.listed}",
        f"  already done    {summary.skipped}",
        f"  captioned       {summary.captioned}",
        f"  failed          {summary.failed}   (see errors/)",
        f"  caption rows    {summary.captions}",
        f"  elapsed         {summary.elapsed_s:.1f} s ({summary.images_per_s:.1f} images/s; "
        f"first shard committed after {summary.startup_s:.1f} s)",
        f"  output          {summary.output.rstrip('/')}/captions/  (Parquet, partitioned by lang)",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except (ConfigError, InputError, ModelError, FileNotFoundError, OutputBusy, QueryError, SubmitError,
            StoreError) as exc:
        log.error("%s", exc)
        return 2
    except RunFailed as exc:
        log.error("run failed: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
