"""The one module that knows the stage order: list, subtract done work, read+decode, caption, write."""

import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import ray

from . import manifest, model, output, schema, stages, storage
from .config import ConfigError, ModelConfig, RunConfig

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0
MIN_IMAGES_FOR_ERROR_RATE = 100  # --max-error-rate judges early only after this many images


@dataclass
class RunSummary:
    run_id: str
    output: str
    listed: int = 0  # images in the input manifest
    skipped: int = 0  # already fully captioned (or failed) in the output
    images: int = 0  # processed by this run
    captioned: int = 0
    failed: int = 0
    captions: int = 0  # rows written to captions/ (images x languages)
    elapsed_s: float = 0.0
    startup_s: float = 0.0  # until the first shard was committed: listing, planning, model loading, first batches
    status: str = "running"
    fingerprint: str = ""
    settings: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.elapsed_s if self.elapsed_s > 0 else 0.0


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


class RunFailed(RuntimeError):
    """The run stopped on purpose (too many errors); everything committed so far stays."""


def run(config: RunConfig) -> RunSummary:
    """Caption every (image, language) of the input the output does not hold yet; returns the run's summary."""
    config.validate()
    _check_stores(config)
    started = time.monotonic()
    summary = RunSummary(run_id=new_run_id(), output=config.output, fingerprint=config.fingerprint(),
                         settings=_settings(config))
    images = _model_inputs(config)
    opts = config.storage.options(config.output)
    with output.Lease(config.output, summary.run_id, opts) as lease:
        shards = output.committed(config.output, opts)
        output.remove_orphans(config.output, shards, opts)
        others = output.conflicts(shards, config.fingerprints())
        if others and config.mode == "resume":
            raise ConfigError(_mixed_settings_message(config, others))

        listing = manifest.build(config.input.uri, config.input.extensions, config.storage.options(config.input.uri))
        run_dir = storage.join(config.output, schema.RUNS_DIR, summary.run_id)
        storage.write_parquet_atomic(storage.join(run_dir, "manifest.parquet"), listing, opts)
        todo = plan(config, listing, shards)
        summary.listed, summary.skipped = listing.num_rows, listing.num_rows - todo.num_rows
        log.info("%d images listed, %d already done, %d to caption", summary.listed, summary.skipped, todo.num_rows)
        output.write_run_record(config.output, summary.run_id, _record(summary), opts)
        try:
            if todo.num_rows:
                _execute(config, images, todo, summary, started, lease)
            _check_error_rate(config, summary, final=True)
            if config.mode == "overwrite" and others:
                _replace(config, others)
            summary.status = "succeeded"
        except BaseException:
            summary.status = "failed"
            raise
        finally:
            summary.elapsed_s = time.monotonic() - started
            output.write_run_record(config.output, summary.run_id, _record(summary), opts)
    return summary


def _check_stores(config: RunConfig) -> None:
    """A missing, forbidden or unreachable bucket fails the run in seconds, before it writes anything."""
    for name in (config.model.name, *(name for _, name in config.translate), config.clip_model or ""):
        if "://" in name:
            storage.check_access(name, config.storage.options(name))
    storage.check_access(config.input.uri, config.storage.options(config.input.uri))
    storage.check_access(config.output, config.storage.options(config.output), write=True)


def _replace(config: RunConfig, others: dict[str, set[str]]) -> None:
    """Overwrite mode, after success: drop the old rows of every (image, language) that now has a new one."""
    opts = config.storage.options(config.output)
    shards = output.committed(config.output, opts)
    superseded = output.captions(config.output, shards, opts, config.fingerprints()).to_table(
        columns=[schema.URI, schema.LANG])
    removed = output.drop_rows(config.output, shards, set().union(*others.values()), superseded, opts)
    log.info("overwrite: removed %d rows made with other settings", removed)


def _model_inputs(config: RunConfig) -> dict[str, model.ImageSpec]:
    """Check the models can do what the run asks, and say what each needs of the decoded images."""
    info = model.describe(config.model, config.storage.options(config.model.name))
    config.producers(info.languages)
    images = {schema.PIXELS: info.image}
    if config.clip_model:
        clip = ModelConfig(name=config.clip_model, cache_dir=config.model.cache_dir,
                           allow_pickle_weights=config.model.allow_pickle_weights)
        images[schema.CLIP_PIXELS] = model.describe_scorer(clip, config.storage.options(config.clip_model))
    return images


def plan(config: RunConfig, listing: pa.Table, shards: list[output.Shard]) -> pa.Table:
    """The listing minus what committed shards hold: captions made with these settings, and errors."""
    opts = config.storage.options(config.output)
    captions = output.captions(config.output, shards, opts, config.fingerprints())
    captioned = captions.to_table(columns=[*schema.IDENTITY, schema.LANG])
    failed = output.errors(config.output, shards, opts).to_table(
        columns=[*schema.IDENTITY, schema.ERROR_TYPE, schema.ATTEMPT])
    todo = manifest.pending(listing, captioned, failed, config.languages, config.retry_errors)
    if config.translate:
        todo = manifest.with_source_captions(todo, captions, config.source_language)
    return todo


def _mixed_settings_message(config: RunConfig, others: dict[str, set[str]]) -> str:
    found = "; ".join(sorted(others)[:4])
    return (
        f"{config.output} holds captions made with other settings (language:settings hash): {found}. This run's "
        f"are {', '.join(f'{k}:{v}' for k, v in config.fingerprints().items())}. Rerun with the same settings to "
        "resume, or pass --mode append to add these captions alongside, or --mode overwrite to replace the old "
        "ones once this run has finished"
    )


def _check_error_rate(config: RunConfig, summary: RunSummary, final: bool = False) -> None:
    """Fail loudly once the share of failed images passes --max-error-rate (early, after enough images)."""
    if config.max_error_rate is None or not summary.images:
        return
    if not final and summary.images < MIN_IMAGES_FOR_ERROR_RATE:
        return
    rate = summary.failed / summary.images
    if rate > config.max_error_rate:
        raise RunFailed(
            f"{summary.failed} of {summary.images} images failed ({rate:.1%}), more than --max-error-rate "
            f"{config.max_error_rate:.1%}; see {config.output.rstrip('/')}/errors/ for why. What is committed stays; "
            "rerun to resume"
        )


def _execute(config: RunConfig, images: dict[str, model.ImageSpec], todo: pa.Table, summary: RunSummary,
             started: float, lease: output.Lease) -> None:
    _init_ray()
    cluster = ray.cluster_resources()
    res = config.resources.resolve(cluster.get("CPU", 1.0), cluster.get("GPU", 0.0))
    res.check_fits([node["Resources"] for node in ray.nodes() if node["Alive"]])
    log.info("caption actors: %d x (%g CPU, %g GPU), batch size %d", res.concurrency, res.num_cpus, res.num_gpus,
             res.batch_size)

    per_block = res.block_rows(todo.num_rows, cluster.get("CPU", 1.0))
    ds = ray.data.from_arrow([todo.slice(i, per_block) for i in range(0, todo.num_rows, per_block)])
    ds = ds.map_batches(
        stages.read_and_decode,
        fn_kwargs={"images": images, "store": config.storage, "limits": config.decode},
        batch_size=res.decode_batch_size,
        batch_format="numpy",
        num_cpus=1,
        # A memory request of its own also keeps Ray from fusing decoding into the caption actor,
        # so CPU tasks decode the next batches while the actor captions this one.
        memory=res.decode_memory_mb * 2**20,
    )
    ds = ds.map_batches(
        stages.CaptionActor,
        fn_constructor_kwargs={"config": config, "run_id": summary.run_id, "num_threads": res.num_threads},
        compute=ray.data.ActorPoolStrategy(min_size=res.concurrency, max_size=res.max_concurrency or res.concurrency),
        batch_size=res.batch_size,
        batch_format="numpy",
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
    )
    ds = ds.map_batches(
        stages.write,
        fn_kwargs={"output": config.output, "store": config.storage},
        batch_size=res.rows_per_file,
        batch_format="pyarrow",
        num_cpus=0.25,
        # a failed PUT is worth retrying: shard names are deterministic, so a retry replaces its own files
        max_retries=3,
        retry_exceptions=[OSError],
    )
    progress = _Progress(todo.num_rows)
    for counts in ds.iter_rows():
        if not summary.images:
            summary.startup_s = time.monotonic() - started
        for key in ("images", "captioned", "failed", "captions"):
            setattr(summary, key, getattr(summary, key) + int(counts[key]))
        progress.update(summary.images)
        _check_error_rate(config, summary)
        if lease.lost:
            raise RunFailed("another run took over this output's lease; stopping so that only one run writes")


def _init_ray() -> None:
    """Join the cluster in RAY_ADDRESS if set, else start a local one; keep Ray's own bars quiet."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class _Progress:
    """Logs done/total, rate and ETA at most every few seconds."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log.info("%d/%d images (%.0f%%), %.1f img/s, ETA %s", done, self.total, 100 * done / self.total, rate,
                 _duration(eta))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _settings(config: RunConfig) -> dict:
    """What the run record keeps of the config: everything but credentials-bearing storage settings."""
    return {
        "input": storage.redact(config.input.uri),
        "model": {**asdict(config.model), "name": storage.redact(config.model.name)},
        "generation": asdict(config.generation),
        "languages": list(config.languages),
        "translate": {lang: storage.redact(name) for lang, name in config.translate},
        "source_language": config.source_language,
        "clip_model": config.clip_model and storage.redact(config.clip_model),
        "num_candidates": config.num_candidates,
        "mode": config.mode,
        "retry_errors": config.retry_errors,
        "max_error_rate": config.max_error_rate,
        "resources": asdict(config.resources),
        "decode": asdict(config.decode),
    }


def _record(summary: RunSummary) -> dict:
    return {**asdict(summary), "images_per_s": summary.images_per_s, "schema_version": schema.SCHEMA_VERSION}
