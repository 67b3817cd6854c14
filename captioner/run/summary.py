"""What a run tells its user and leaves behind: the summary, progress lines, and the run record."""

import contextlib
import json
import logging
import shlex
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import schema
from ..config import RunConfig, UserError
from ..store import fs as storage
from ..store import manifest
from .planning import Plan

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
    # per language: caption rows, rows that read as another language, rows whose language could not be told
    language_check: dict[str, dict[str, int]] = field(default_factory=dict)
    # each caption actor's check of the fast path per batch shape: batch, tokens, verdict, fast_s, check_s
    fast_checks: list[dict] = field(default_factory=list)

    def add(self, counts: dict) -> None:
        """Add one written shard's counts (a row of the write stage)."""
        for key in ("images", "captioned", "failed", "segments", "failed_segments", "captions", "empty_captions"):
            setattr(self, key, getattr(self, key) + int(counts[key]))
        for lang, figures in json.loads(counts["languages"]).items():
            mine = self.language_check.setdefault(lang, dict.fromkeys(figures, 0))
            for key, n in figures.items():
                mine[key] += n

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
    """A live bar with rate and ETA on a terminal; elsewhere (CI, ``ray job submit`` logs) a log line at most
    every few seconds, since a redrawn bar is noise in a file. Log lines printed meanwhile go above the bar."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.start = time.monotonic()
        self.last = 0.0
        stream = stream or sys.stderr
        self.bar = tqdm(total=total, unit="img", desc="captioning", file=stream, dynamic_ncols=True) \
            if stream.isatty() else None
        self._redirect = logging_redirect_tqdm() if self.bar else contextlib.nullcontext()

    def __enter__(self) -> "Progress":
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.close()
        self._redirect.__exit__(*exc)

    def update(self, done: int) -> None:
        if self.bar:
            self.bar.update(done - self.bar.n)
            return
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
        f"  failed          {summary.failed}" + ("   (see errors/)" if summary.failed else ""),
        f"  video segments  {summary.segments}" + (f"   ({summary.failed_segments} failed: see errors/)"
                                                    if summary.failed_segments else ""),
        f"  caption rows    {summary.captions}",
        f"  empty captions  {summary.empty_captions}   (rows with caption = '')",
        f"  elapsed         {summary.elapsed_s:.1f} s ({summary.images_per_s:.1f} images/s; "
        f"first shard committed after {summary.startup_s:.1f} s)",
        f"  output          {summary.output.rstrip('/')}/captions/  (Parquet, partitioned by lang)",
        *fast_path(summary.fast_checks),
        *language_check(summary.language_check, summary.output),
    ])


def fast_path(checks: list[dict]) -> list[str]:
    """How the fast path's self-checks went: what they cost, and every shape left to the plain path and why."""
    if not checks:
        return []
    cost = sum(check["check_s"] for check in checks)
    failed = [check for check in checks if check["verdict"] != "fast"]
    lines = [f"  fast path       {len(checks)} batch shapes checked against plain generate ({cost:.1f} s); "
             + (f"{len(failed)} fell back to the plain path" if failed else "all agree")]
    lines += [f"    batches of {check['batch']}: {check['verdict']}" for check in failed]
    return lines


def language_check(languages: dict[str, dict[str, int]], output: str) -> list[str]:
    """One line per language: how many of its rows read as another language (``detected_lang``), and how many were
    too short to tell; then how to list them."""
    lines = [f"    {lang}: {row['wrong_language']} of {row['captions']} rows look like another language"
             + (f" ({row['not_identified']} not identified: empty or too short to tell)" if row["not_identified"]
                else "") for lang, row in sorted(languages.items())]
    if any(row["wrong_language"] for row in languages.values()):
        lines.append(f"    captioner query {shlex.quote(output.rstrip('/'))} --wrong-language   # shows them")
    return ["  language check"] + lines if lines else []


def format_captions(rows: list[dict], input_uri: str, every: bool) -> str:
    """Caption rows grouped by image (and video segment), each path shown relative to the run's input."""
    if not rows:
        return ""
    prefix = manifest.absolute(input_uri).rstrip("/") + "/"
    lines = ["Captions:" if every else "A sample of the captions (captioner query shows them all):"]
    shown = None
    for row in rows:
        item = (row[schema.URI], row[schema.SEGMENT])
        if item != shown:
            shown = item
            path = item[0][len(prefix):] if item[0].startswith(prefix) else item[0]
            at = f"  ({row[schema.START_S]:.0f}-{row[schema.END_S]:.0f} s)" if item[1] is not None else ""
            lines.append(f"  {path}{at}")
        lines.append(f"    {row[schema.LANG]}  {row[schema.CAPTION] or '(empty)'}   score {row[schema.SCORE]:.2f}")
    return "\n".join(lines)


def next_commands(output: str) -> str:
    """What to try once a run has ended."""
    out = shlex.quote(output.rstrip("/"))
    return "\n".join([
        "Next:",
        f"  captioner report {out} --html report.html   # a page to browse, filter and score the captions",
        f"  captioner query {out} --lang en --limit 5   # filter by language, score, text, path; or --sql",
        f"  captioner stats {out}                       # counts, scores per language, errors by type",
    ])


def format_plan(plan: Plan, config: RunConfig) -> str:
    """What ``captioner run --dry-run`` prints: the plan, and that nothing was written."""
    langs = ", ".join(f"{lang} {n}" for lang, n in plan.per_language.items())
    return "\n".join([
        f"dry run: {config.output.rstrip('/')} planned; nothing written, no image read",
        f"  images listed     {plan.listed}",
        f"  already done      {plan.done}",
        f"  failed for good   {plan.failed_for_good}" + ("   (--retry-errors tries them again)"
                                                      if plan.failed_for_good else ""),
        f"  to caption        {plan.todo}" + (f"   (per language: {langs})" if langs else ""),
        f"  shards to write   {plan.shards}   ({config.resources.rows_per_file} images each, --rows-per-file)",
    ])
