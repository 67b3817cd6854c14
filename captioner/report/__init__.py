"""One self-contained HTML page to look at an output: thumbnails beside their captions with a filter box, score
histograms, the error table and the runs. Everything is inline (images as data URIs, charts as SVG, the filter
as a few lines of script): it opens from disk in any browser, with no server.
"""

import base64
import io
import logging

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from .. import query, schema
from ..config import DEFAULT_FORMATS, StorageConfig
from ..media.video import frame_at
from ..store import fs as storage
from ..store import state
from .page import BINS, FILTER_SCRIPT, PAGE, escape as _e, histograms
from ..schema import ATTEMPT, CAPTION, CLIP_SCORE, DETECTED_LANG, ERROR, ERROR_TYPE, LANG, PRODUCER, SCORE, SEGMENT, URI

log = logging.getLogger(__name__)

THUMBNAIL = 192  # longest side of a thumbnail, in pixels
THUMBNAIL_MAX_BYTES = 64 * 2**20  # larger images get no thumbnail rather than a worker full of bytes
SEGMENTS_SHOWN = 6  # the first segments of a sampled video get a card each
WRONG_SHOWN = 50  # captions that read as another language, listed from the whole output
SHOWN = (URI, SEGMENT, schema.START_S, schema.END_S, LANG, CAPTION, SCORE, CLIP_SCORE, PRODUCER, DETECTED_LANG,
         schema.DETECTED_LANG_CONFIDENCE)  # a sampled row

# The rows whose URIs hash lowest: DuckDB keeps {rows} rows, however many the output holds.
LOWEST = f"SELECT {URI} FROM {schema.CAPTIONS_DIR} ORDER BY hash({URI}) LIMIT {{rows}}"
ERRORS = (f"SELECT {URI}, {ERROR_TYPE}, {ERROR}, {ATTEMPT} FROM {schema.ERRORS_DIR} "
          f"ORDER BY {ERROR_TYPE}, {URI} LIMIT {{n}}")
WRONG = (f"SELECT {URI}, {LANG}, {DETECTED_LANG}, {schema.DETECTED_LANG_CONFIDENCE}, {CAPTION} FROM "
         f"{schema.CAPTIONS_DIR} WHERE {DETECTED_LANG} <> {LANG} ORDER BY {LANG}, {URI} LIMIT {WRONG_SHOWN}")


def render(out: str, store: StorageConfig, images: int = 24, errors: int = 50) -> str:
    """The report page for ``out``: a deterministic sample of ``images`` images, and up to ``errors`` errors."""
    options = store.options(out)
    shards = state.committed(out, options)  # read once: every figure on the page is of the same shards
    stats = query.stats(out, options, shards, bins=BINS)
    sample = _sample(out, shards, options, int(images))
    failures = query.sql(out, ERRORS.format(n=int(errors)), options, shards).read_all().to_pylist()
    wrong = query.sql(out, WRONG, options, shards).read_all().to_pylist()
    body = [
        f"<h1>captioner report: {_e(out)}</h1>",
        _summary(stats),
        "<h2>Captions</h2>",
        _filter(sorted({row[LANG] for row in sample})),
        _gallery(sample, store),
        "<h2>Another language?</h2>",
        _wrong(stats["language_check"], wrong),
        "<h2>Scores</h2><p>Mean token log-probability of each caption; higher is more confident.</p>",
        histograms(stats["histogram"]),
        "<h2>Errors</h2>",
        _errors(stats, failures),
        "<h2>Runs</h2>",
        _runs(stats["runs"]),
        FILTER_SCRIPT,
    ]
    return PAGE.format(title=_e(f"captioner report: {out}"), body="\n".join(body))


def _sample(out: str, shards: list[state.Shard], options: dict, n: int) -> list[dict]:
    """The caption rows (of the first SEGMENTS_SHOWN segments) of the ``n`` images whose URIs hash lowest.

    The rows with the lowest hashes hold those URIs once they hold more than n URIs (or are every row), so the
    search reads more rows only when an image has many (a video's segments); a second scan reads the sampled
    images' rows alone.
    """
    rows = 16 * (n + 1)
    while True:
        lowest = query.sql(out, LOWEST.format(rows=rows), options, shards).read_all()
        uris = list(dict.fromkeys(lowest[URI].to_pylist()))  # by hash, each once
        if len(uris) > n or lowest.num_rows < rows:
            break
        rows *= 4
    order = {uri: i for i, uri in enumerate(uris[:n])}
    first_segments = pc.field(SEGMENT).is_null() | (pc.field(SEGMENT) < SEGMENTS_SHOWN)
    shown = pc.field(URI).isin(pa.array(list(order), pa.string())) & first_segments
    found = query.scan(out, shards, list(SHOWN), shown, options=options).read_all().to_pylist()
    return sorted(found, key=lambda r: (order[r[URI]], -1 if r[SEGMENT] is None else r[SEGMENT], r[LANG]))


def _summary(stats: dict) -> str:
    per_lang = ", ".join(f"{_e(k)} {v}" for k, v in sorted(stats["captions_per_language"].items()))
    return (f"<p class=summary>{int(stats['images_processed'])} images: {int(stats['captioned'])} captioned, "
            f"{int(stats['failed'])} failed. Captions per language: {per_lang or 'none'}.</p>")


def _thumbnail(uri: str, store: StorageConfig, at_s: float | None = None) -> str:
    """A data URI of a small JPEG of the image (of a video's frame at ``at_s``), or an empty string where it
    cannot be read."""
    try:
        if at_s is not None:
            fs, path = storage.filesystem(uri, store.options(uri))
            with fs.open(path, "rb") as f:
                thumb = frame_at(f, at_s)
        else:
            data = storage.read_bytes(uri, store.options(uri), limit=THUMBNAIL_MAX_BYTES)
            with Image.open(io.BytesIO(data), formats=list(DEFAULT_FORMATS)) as img:  # never EPS and the like
                img.draft("RGB", (THUMBNAIL, THUMBNAIL))
                thumb = img.convert("RGB")
        thumb.thumbnail((THUMBNAIL, THUMBNAIL))
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=80)
    except Exception as exc:  # a missing or unreadable image only loses its thumbnail
        log.warning("no thumbnail for %s: %s", uri, exc)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _gallery(rows: list[dict], store: StorageConfig) -> str:
    by_image: dict[tuple, list[dict]] = {}
    for row in rows:  # one card per image, and per video segment
        by_image.setdefault((row[URI], row[schema.SEGMENT]), []).append(row)
    cards = []
    for (uri, segment), captions in by_image.items():
        start, end = captions[0][schema.START_S], captions[0][schema.END_S]
        src = _thumbnail(uri, store, None if segment is None else (start + end) / 2)
        if segment is not None:
            uri = f"{uri} [{_clock(start)}-{_clock(end)}]"
        picture = f'<img src="{src}" alt="{_e(uri)}">' if src else '<div class=missing>image unavailable</div>'
        lines = "".join(
            f'<li data-lang="{_e(c[LANG])}" data-score="{c[SCORE]:.6f}" data-wrong="{int(_reads_wrong(c))}">'
            f"<b>{_e(c[LANG])}</b> <span class=caption>{_e(c[CAPTION])}</span> "
            + (f"<mark>reads as {_e(c[DETECTED_LANG])}</mark> " if _reads_wrong(c) else "")
            + f"<small>score {c[SCORE]:.2f}"
            + (f", CLIP {c[CLIP_SCORE]:.2f}" if c[CLIP_SCORE] is not None else "")
            + (f", via {_e(c[PRODUCER])}" if c[PRODUCER] != schema.NATIVE else "")
            + "</small></li>"
            for c in captions
        )
        cards.append(f'<figure class=card>{picture}<figcaption><code>{_e(uri)}</code><ul>{lines}</ul>'
                     f'</figcaption></figure>')
    return f"<div class=gallery>{''.join(cards)}</div>" if cards else "<p>No captions yet.</p>"


def _reads_wrong(row: dict) -> bool:
    return row[DETECTED_LANG] is not None and row[DETECTED_LANG] != row[LANG]


def _wrong(check: dict[str, dict[str, int]], rows: list[dict]) -> str:
    """Per language, the rows that read as another language, then (up to WRONG_SHOWN of) them."""
    counts = "".join(f"<li>{_e(lang)}: {r['wrong_language']} of {r['captions']} rows look like another language"
                     + (f" ({r['not_identified']} not identified)" if r["not_identified"] else "") + "</li>"
                     for lang, r in sorted(check.items()))
    table = "".join(f"<tr><td><code>{_e(r[URI])}</code></td><td>{_e(r[LANG])}</td><td>{_e(r[DETECTED_LANG])} "
                    f"({r[schema.DETECTED_LANG_CONFIDENCE]:.2f})</td><td>{_e(r[CAPTION])}</td></tr>" for r in rows)
    return (f"<ul class=check>{counts}</ul>" + (f"<table class=wrong><tr><th>uri</th><th>lang</th><th>reads as"
            f"</th><th>caption</th></tr>{table}</table>" if rows else "<p>No caption reads as another language.</p>"))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


def _filter(langs: list[str]) -> str:
    options = "".join(f'<option value="{_e(lang)}">{_e(lang)}</option>' for lang in langs)
    return ('<form id=filter class=filter onsubmit="return false"><label>Language <select name=lang>'
            f'<option value="">all</option>{options}</select></label> <label>Caption contains <input name=text '
            'type=search></label> <label>Score at least <input name=minscore type=number step=0.1></label> '
            '<label><input name=wrong type=checkbox> Only captions that read as another language</label> '
            '<output id=shown></output><p><small>Filters the images sampled here; <code>captioner query</code> '
            "filters the whole output.</small></p></form>")


def _errors(stats: dict, rows: list[dict]) -> str:
    if not rows:
        return "<p>No errors.</p>"
    kinds = "".join(f"<li>{_e(k)}: {n}</li>" for k, n in sorted(stats["errors_by_type"].items(), key=lambda kv: -kv[1]))
    table = "".join(f"<tr><td><code>{_e(r[URI])}</code></td><td>{_e(r[ERROR_TYPE])}</td><td>{_e(r[ERROR])}</td>"
                    f"<td>{_e(r[ATTEMPT])}</td></tr>" for r in rows)
    return (f"<ul>{kinds}</ul><table class=errors><tr><th>uri</th><th>type</th><th>message</th><th>attempt</th></tr>"
            f"{table}</table>")


def _runs(runs: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['run_id'])}</td><td>{_e(r['status'])}</td><td>{int(r['images'])}</td>"
        f"<td>{int(r['failed'])}</td><td>{float(r['elapsed_s']):.1f} s</td><td>{float(r['images_per_s']):.1f}</td></tr>"
        for r in runs
    )
    return ("<table><tr><th>run</th><th>status</th><th>images</th><th>failed</th><th>elapsed</th><th>images/s</th>"
            f"</tr>{rows}</table>")
