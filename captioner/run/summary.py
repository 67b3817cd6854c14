"""What a run tells its user and leaves behind: the summary, progress lines, and the run record."""

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .. import schema
from ..config import RunConfig, UserError
from ..store import fs as storage

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


@dataclass
class RunSummary:
    run_id: str
    output: str
    listed: int = 0  # images in the input manifest
    skipped: int = 0  # already fully captioned (or failed) in the output
    images: int = 0  # processed by this run
    captioned: int = 0
    failed: int = 0
    segments: int = 0  # video segments captioned
    failed_segments: int = 0  # video segments that did not decode while others of their video did
    captions: int = 0  # rows written to captions/ (images and segments x languages)
    empty_captions: int = 0  # caption rows whose text is empty: the model ended its caption at once
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


class RunFailed(UserError, RuntimeError):
    """The run stopped on purpose (too many errors); everything committed so far stays."""

    exit_status = 1
    prefix = "run failed: "


class Progress:
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


def run_settings(config: RunConfig) -> dict:
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
        "video": asdict(config.video),
    }


def run_record(summary: RunSummary) -> dict:
    return {**asdict(summary), "images_per_s": summary.images_per_s, "schema_version": schema.SCHEMA_VERSION}


def format_summary(summary: RunSummary) -> str:
    """The lines printed when a run ends."""
    return "\n".join([
        f"run {summary.run_id}: {summary.status}",
        f"  images listed   {summary.listed}",
        f"  already done    {summary.skipped}",
        f"  captioned       {summary.captioned}",
        f"  failed          {summary.failed}   (see errors/)",
        f"  video segments  {summary.segments}" + (f"   ({summary.failed_segments} failed: see errors/)"
                                                    if summary.failed_segments else ""),
        f"  caption rows    {summary.captions}",
        f"  empty captions  {summary.empty_captions}   (rows with caption = '')",
        f"  elapsed         {summary.elapsed_s:.1f} s ({summary.images_per_s:.1f} images/s; "
        f"first shard committed after {summary.startup_s:.1f} s)",
        f"  output          {summary.output.rstrip('/')}/captions/  (Parquet, partitioned by lang)",
    ])
