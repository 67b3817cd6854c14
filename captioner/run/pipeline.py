"""The one module that knows the stage order: list, subtract done work, read+decode, caption, write."""

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterable

import ray
from pyarrow.fs import FSSpecHandler, PyFileSystem

from .. import langid, schema
from ..config import ConfigError, ResourceConfig, RunConfig
from ..fingerprint import fingerprint, fingerprints
from ..media.image import ImageSpec
from ..models import loading, translation
from ..store import fs as storage
from ..store import manifest, rewrite, state
from ..store.lease import Lease
from . import cluster, planning, reading, resources, stages, writing
from .summary import Progress, RunFailed, RunSummary, new_run_id, run_record, run_settings

log = logging.getLogger(__name__)

DRAIN_S = 60.0  # how long a stopping run waits for its write tasks
MIN_IMAGES_FOR_ERROR_RATE = 100  # --max-error-rate judges early only after this many images
MANIFEST = "manifest"  # under runs/<run_id>/: the frozen input


def run(config: RunConfig) -> RunSummary:
    """Caption every (image, language) of the input the output does not hold yet; returns the run's summary."""
    config.validate()
    _check_stores(config)
    started = time.monotonic()
    summary = RunSummary(run_id=new_run_id(), output=config.output, fingerprint=fingerprint(config),
                         settings=run_settings(config))
    images = _model_inputs(config)
    opts = config.storage.options(config.output)
    with Lease(config.output, summary.run_id, opts) as lease:
        lease.check()
        state.remove_orphans(config.output, opts)
        shards = state.committed(config.output, opts)
        others = state.conflicts(shards, fingerprints(config))
        if others and config.mode == "resume":
            raise ConfigError(planning.mixed_settings_message(config, others))

        run_dir = storage.join(config.output, schema.RUNS_DIR, summary.run_id)
        listing = storage.join(run_dir, MANIFEST)
        summary.listed = manifest.freeze(config.input.uri, config.input.extensions,
                                         config.storage.options(config.input.uri), listing, opts)
        parts, blocks = storage.join(run_dir, schema.TODO_DIR), 0
        with planning.plan(config, listing, shards) as todo:
            pending, summary.skipped = todo.rows, summary.listed - todo.rows
            log.info("%d images listed, %d already done, %d to caption", summary.listed, summary.skipped, pending)
            if pending:
                res, cpus = _resources(config)
                blocks = planning.write(todo, parts, resources.block_rows(res, pending, cpus), opts)
        state.write_run_record(config.output, summary.run_id, run_record(summary), opts)
        try:
            if pending:
                _execute(config, images, res, parts, blocks, pending, summary, started, lease)
            _check_error_rate(config, summary, final=True)
            if config.mode == "overwrite" and others:
                lease.check()
                _replace(config, others)
            summary.status = "succeeded"
        except BaseException:
            summary.status = "failed"
            _drain(config, summary.run_id)
            raise
        finally:
            storage.remove_tree(parts, opts)  # the plan's input blocks: the next run plans afresh
            summary.elapsed_s = time.monotonic() - started
            summary.fast_checks = state.fast_checks(config.output, summary.run_id, opts)
            state.write_run_record(config.output, summary.run_id, run_record(summary), opts)
    return summary


def _drain(config: RunConfig, run_id: str) -> None:
    """A stopping run waits for its write tasks still writing before it lets the lease go, so that the next run's
    clean-up never races a marker being written; past DRAIN_S it goes (readers skip markers with missing files)."""
    running = state.drain(config.output, run_id, DRAIN_S, config.storage.options(config.output))
    if running:
        log.warning("%d write tasks were still running %.0f s after the run stopped; leaving them", running, DRAIN_S)


def dry_run(config: RunConfig) -> planning.Plan:
    """What ``run`` would do now: the same checks, listing and plan against OUTPUT; it writes nothing (no lease
    either) and reads no image."""
    config.validate()
    for url in (config.input.uri, config.output):
        storage.check_access(url, config.storage.options(url))
    _model_inputs(config)
    opts = config.storage.options(config.output)
    shards = state.committed(config.output, opts)
    others = state.conflicts(shards, fingerprints(config))
    if others and config.mode == "resume":
        raise ConfigError(planning.mixed_settings_message(config, others))
    with tempfile.TemporaryDirectory(prefix="captioner-manifest-") as listing:
        listed = manifest.freeze(config.input.uri, config.input.extensions, config.storage.options(config.input.uri),
                                 listing)
        return planning.count(config, listing, listed, shards)


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
    shards = state.committed(config.output, opts)
    superseded = state.captions(config.output, shards, opts, fingerprints(config)).to_table(
        columns=[schema.URI, schema.LANG])
    removed = rewrite.drop_rows(config.output, shards, set().union(*others.values()), superseded, opts)
    log.info("overwrite: removed %d rows made with other settings", removed)


def _model_inputs(config: RunConfig) -> dict[str, ImageSpec]:
    """Check the models can do what the run asks, and say what each needs of the decoded images."""
    info = loading.describe(config.model, config.storage.options(config.model.name))
    _check_languages(config, info.languages)
    for lang, name in config.translate:
        translation.check(config.model.helper(name), config.storage.options(name), config.source_language, lang)
    images = {schema.PIXELS: info.image}
    if config.clip_model:
        clip = config.model.helper(config.clip_model)
        images[schema.CLIP_PIXELS] = loading.describe_scorer(clip, config.storage.options(config.clip_model))
    return images


def _check_languages(config: RunConfig, native: Iterable[str]) -> None:
    """Refuse before any work a language nobody writes: a language with a translation model is translated,
    any other the captioner must write natively; translations start from a language written natively."""
    if unknown := langid.unknown(config.languages):
        log.warning("the language identifier does not know %s: detected_lang will name another language for "
                    "those rows", ", ".join(unknown))
    native = set(native)
    translators = dict(config.translate)
    producer = {lang: translators.get(lang) for lang in config.languages}
    missing = [lang for lang, model in producer.items() if model is None and lang not in native]
    if missing:
        raise ConfigError(
            f"model {config.model.name!r} cannot write {', '.join(missing)} (it writes {', '.join(sorted(native))}); "
            f"change --languages or translate, e.g. --translate {missing[0]}=Helsinki-NLP/opus-mt-"
            f"{config.source_language}-{missing[0]}"
        )
    if translators and (config.source_language not in producer or producer[config.source_language] is not None):
        raise ConfigError(
            f"translations start from {config.source_language} captions: list {config.source_language} in "
            "--languages, written natively, or pick another --source-language"
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


def _resources(config: RunConfig) -> tuple[ResourceConfig, float]:
    """Join or start Ray, and size the caption actors and blocks to the cluster: (resources, the cluster's CPUs)."""
    cluster.connect()
    available = ray.cluster_resources()
    res = resources.resolve(config.resources, available.get("CPU", 1.0), available.get("GPU", 0.0))
    resources.check_fits(res, [node["Resources"] for node in ray.nodes() if node["Alive"]])
    log.info("caption actors: %d x (%g CPU, %g GPU), batch size %d", res.concurrency, res.num_cpus, res.num_gpus,
             res.batch_size)
    return res, available.get("CPU", 1.0)


def _execute(config: RunConfig, images: dict[str, ImageSpec], res: ResourceConfig, parts: str, blocks: int,
             pending: int, summary: RunSummary, started: float, lease: Lease) -> None:
    """Read the plan's ``blocks`` Parquet parts under ``parts``, then decode, caption and write them on Ray."""
    fs, root = storage.filesystem(parts, config.storage.options(config.output))
    ds = ray.data.read_parquet(root, filesystem=None if storage.is_local(fs) else PyFileSystem(FSSpecHandler(fs)),
                               override_num_blocks=blocks)
    ds = ds.map_batches(
        reading.read_and_decode,
        fn_kwargs={"images": images, "store": config.storage, "limits": config.decode, "video": config.video,
                   "source_language": config.source_language},
        batch_size=res.decode_batch_size,
        batch_format="numpy",
        num_cpus=1,
        # A memory request of its own also keeps Ray from fusing decoding into the caption actor,
        # so CPU tasks decode the next batches while the actor captions this one.
        memory=res.decode_memory_mb * 2**20,
    )
    ds = ds.map_batches(
        stages.CaptionActor,
        fn_constructor_kwargs={"config": config, "run_id": summary.run_id, "num_threads": res.num_threads,
                               "fingerprints": fingerprints(config)},
        compute=ray.data.ActorPoolStrategy(min_size=res.concurrency, max_size=res.max_concurrency or res.concurrency),
        batch_size=res.batch_size,
        batch_format="numpy",
        **resources.actor_args(res),
    )
    ds = ds.map_batches(
        writing.write,
        fn_kwargs={"output": config.output, "store": config.storage, "languages": config.languages},
        batch_size=res.rows_per_file,
        batch_format="pyarrow",
        num_cpus=0.25,
    )
    rows = iter(ds.iter_rows())
    try:
        with Progress(pending) as progress, contextlib.closing(rows):  # closing stops the dataset's tasks
            for counts in rows:
                if not summary.images:
                    summary.startup_s = time.monotonic() - started
                summary.add(counts)
                progress.update(summary.images)
                _check_error_rate(config, summary)
                if lease.lost:
                    lease.check()
    except Exception as exc:
        failed = _caption_failure(exc)
        if failed is None:
            raise
        raise RunFailed(f"the model cannot caption: {failed}. What is committed stays; fix the model or its "
                        "settings and rerun") from None


def _caption_failure(exc: BaseException) -> stages.CaptionFailed | None:
    """The caption actor's own CaptionFailed, inside whatever Ray wrapped it in, if that is what stopped the run."""
    found, seen = None, exc
    while seen is not None:
        if isinstance(seen, stages.CaptionFailed):
            found = seen  # the innermost is the actor's own, without Ray's traceback text
        seen = getattr(seen, "cause", None) or seen.__cause__
    return found
