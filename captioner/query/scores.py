"""Score figures per language in two streaming passes, with a few counters per language instead of every score.

Exact quantiles need ranks, and a sort needs every value in memory. Here each score becomes a 32-bit key that
sorts as the float does; the first pass counts keys by their high 16 bits, which locates the bucket holding each
wanted rank, and the second counts the low 16 bits inside those buckets only, which gives the key at the rank.
The figures equal DuckDB's count, min, quantile_cont, max and avg: the same ranks, interpolated the same way in
the same float precision.
"""

import math
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import schema

QUANTILES = (("p10", 0.1), ("median", 0.5), ("p90", 0.9))
RADIX = 1 << 16  # counters per table: 0.5 MB, one table per language and one per bucket holding a wanted rank
CHUNK_ROWS = 65_536  # rows counted at a time
Scan = Callable[[list[str]], pa.RecordBatchReader]  # the caption rows, these columns only


def _keys(scores: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint32 keys ordered as the float32 scores are (-0.0 counts as 0.0, NaN above everything)."""
    bits = (scores.to_numpy(zero_copy_only=False).astype(np.float32) + np.float32(0)).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))


def _score(key: int) -> np.float32:
    """The float32 score of a key."""
    bits = key ^ 0x80000000 if key >> 31 else ~key & 0xFFFFFFFF
    return np.array([bits], np.uint32).view(np.float32)[0]


def _by_language(scan: Scan, columns: list[str]) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The scanned rows in batches of one language, of about CHUNK_ROWS rows: a file (one language) is often a
    thousand rows, too few to pay for a round of numpy calls each."""
    held: dict[str, list[pa.RecordBatch]] = {}
    rows: dict[str, int] = {}
    for batch in scan([schema.LANG, *columns]):
        langs = pc.unique(batch[schema.LANG])
        for lang in langs.to_pylist():
            part = batch if len(langs) == 1 else batch.filter(pc.equal(batch[schema.LANG], lang))
            held.setdefault(lang, []).append(part)
            rows[lang] = rows.get(lang, 0) + part.num_rows
            if rows[lang] >= CHUNK_ROWS:
                del rows[lang]
                yield lang, pa.concat_batches(held.pop(lang))
    for lang, parts in held.items():
        yield lang, pa.concat_batches(parts)


def _locate(table: np.ndarray, rank: int) -> tuple[int, int]:
    """The counter of ``table`` whose values hold the 0-based ``rank``, and the rank among those values."""
    below = np.cumsum(table)
    index = int(np.searchsorted(below, rank, side="right"))
    return index, rank - (int(below[index - 1]) if index else 0)


def _ranks(n: int, q: float) -> tuple[float, int, int]:
    """DuckDB's continuous quantile position: (n - 1) * q, and the ranks either side of it."""
    position = (n - 1) * q
    return position, math.floor(position), math.ceil(position)


def _interpolate(low: np.float32, high: np.float32, fraction: float) -> np.float32:
    """As DuckDB's quantile_cont on FLOAT: in double, rounded to float32 at the end."""
    return np.float32(float(low) + (float(high) - float(low)) * fraction)


def summary(scan: Scan, bins: int = 0) -> tuple[dict[str, dict], dict]:
    """({language: captions, min, p10, median, p90, max, mean_clip_score, empty, wrong_language, not_identified},
    by language), and with ``bins``
    the histogram {lo, hi, counts: {language: captions per bin}} over the score range of all languages (else {}).

    ``scan(columns)`` reads these columns of every caption row; it is called twice."""
    found = _first_pass(scan)
    lo = min((_score(f["first"]) for f in found.values()), default=np.float32(0))
    hi = max((_score(f["last"]) for f in found.values()), default=np.float32(0))
    counts = _second_pass(scan, found, lo, hi, bins)
    per_lang = {lang: _figures(found[lang]) for lang in sorted(found)}
    histogram = {"lo": float(lo), "hi": float(hi), "counts": {k: v.tolist() for k, v in sorted(counts.items())}}
    return per_lang, histogram if bins else {}


def _first_pass(scan: Scan) -> dict[str, dict]:
    """Per language: the counts, the lowest and highest keys, the CLIP sum, and keys counted by their high bits;
    then where each wanted rank falls: its bucket, and its rank inside the bucket."""
    found: dict[str, dict] = {}
    for lang, batch in _by_language(scan, [schema.SCORE, schema.CLIP_SCORE, schema.CAPTION, schema.DETECTED_LANG]):
        keys = _keys(batch[schema.SCORE])
        clip = batch[schema.CLIP_SCORE].drop_null()
        figures = found.setdefault(lang, {"n": 0, "first": 2**32, "last": -1, "clip": 0.0, "clips": 0, "empty": 0,
                                          "wrong": 0, "unknown": 0, "high": np.zeros(RADIX, np.int64)})
        figures["n"] += len(keys)
        figures["first"] = min(figures["first"], int(keys.min()))
        figures["last"] = max(figures["last"], int(keys.max()))
        figures["clip"] += float(np.sum(clip.to_numpy(zero_copy_only=False), dtype=np.float64))
        figures["clips"] += len(clip)
        figures["empty"] += int(pc.sum(pc.equal(batch[schema.CAPTION], "")).as_py() or 0)
        detected = batch[schema.DETECTED_LANG]  # null: empty, too short to tell, or written before identification
        figures["unknown"] += detected.null_count
        figures["wrong"] += int(pc.sum(pc.not_equal(detected, lang)).as_py() or 0)
        figures["high"] += np.bincount(keys >> 16, minlength=RADIX)
    for figures in found.values():
        ranks = {r for _, q in QUANTILES for r in _ranks(figures["n"], q)[1:]}
        figures["at"] = {rank: _locate(figures["high"], rank) for rank in ranks}
        figures["low"] = {bucket: np.zeros(RADIX, np.int64) for bucket, _ in figures["at"].values()}
    return found


def _second_pass(scan: Scan, found: dict[str, dict], lo: np.float32, hi: np.float32,
                 bins: int) -> dict[str, np.ndarray]:
    """Count the low bits of the keys in the buckets holding wanted ranks, and with ``bins`` the captions per bin
    of each language, as SQL's least(floor((score - lo) / greatest(hi - lo, 1e-9) * bins), bins - 1)."""
    width = max(float(np.float32(hi - lo)), 1e-9)
    counts = {lang: np.zeros(bins, np.int64) for lang in found}
    for lang, batch in _by_language(scan, [schema.SCORE]):
        keys = _keys(batch[schema.SCORE])
        for bucket, table in found[lang]["low"].items():
            table += np.bincount(keys[keys >> 16 == bucket] & 0xFFFF, minlength=RADIX)
        if bins:
            scores = batch[schema.SCORE].to_numpy(zero_copy_only=False).astype(np.float32)
            which = np.minimum(np.floor((scores - lo).astype(np.float64) / width * bins), bins - 1)
            counts[lang] += np.bincount(which.astype(np.int64), minlength=bins)
    return counts


def _figures(figures: dict) -> dict:
    """A language's figures, in the order and types DuckDB gave them."""
    def at(rank: int) -> np.float32:
        bucket, inside = figures["at"][rank]
        return _score(bucket << 16 | _locate(figures["low"][bucket], inside)[0])

    quantiles = {}
    for name, q in QUANTILES:
        position, below, above = _ranks(figures["n"], q)
        value = at(below) if below == above else _interpolate(at(below), at(above), position - below)
        quantiles[name] = float(value)
    return {"captions": figures["n"], "min": float(_score(figures["first"])), **quantiles,
            "max": float(_score(figures["last"])),
            "mean_clip_score": figures["clip"] / figures["clips"] if figures["clips"] else None,
            "empty": figures["empty"], "wrong_language": figures["wrong"], "not_identified": figures["unknown"]}
