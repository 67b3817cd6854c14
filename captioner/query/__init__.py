"""Reading the output back: committed captions and errors only, filtered or by SQL, streamed in batches."""

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .. import schema
from . import scores
from ..config import UserError
from ..store import state

BATCH_ROWS = 65_536  # rows per streamed batch: bounded memory whatever the output's size
SHARDS_PER_SCAN = 64  # shards an Arrow scan is given at a time: see ``scan``
SQL_MEMORY_LIMIT = "1GB"  # DuckDB's working memory for --sql; more spills to a scratch folder


class QueryError(UserError, ValueError):
    """A query that cannot run as written; the message says what to change."""


@dataclass(frozen=True)
class Filter:
    """Row filters of ``captioner query``; unset fields do not filter."""

    lang: tuple[str, ...] = ()  # any of these languages
    min_score: float | None = None  # score >= this
    contains: str | None = None  # caption contains this text, case-insensitively
    uri_glob: str | None = None  # uri matches this glob (* and ?)
    run_id: str | None = None  # written by this run
    media: str | None = None  # "image" (still images) or "video" (video segments)
    at_s: float | None = None  # video segments that span this second
    wrong_language: bool = False  # captions whose detected language is not their ``lang``

    def expression(self, ledger: bool) -> pc.Expression | None:
        if ledger and (self.lang or self.min_score is not None or self.contains or self.media or self.at_s is not None
                       or self.wrong_language):
            raise QueryError("--lang, --min-score, --contains, --media, --at and --wrong-language filter captions; "
                             "with --errors use --uri or --run")
        if self.media not in (None, "image", "video"):
            raise QueryError(f"--media is image or video, got {self.media!r}")
        parts = []
        if self.lang:
            parts.append(pc.field(schema.LANG).isin(list(self.lang)))
        if self.min_score is not None:
            parts.append(pc.field(schema.SCORE) >= self.min_score)
        if self.contains:
            parts.append(pc.match_substring(pc.field(schema.CAPTION), self.contains, ignore_case=True))
        if self.uri_glob:
            parts.append(pc.match_like(pc.field(schema.URI), _glob_to_like(self.uri_glob)))
        if self.run_id:
            parts.append(pc.field(schema.RUN_ID) == self.run_id)
        if self.media:
            video = pc.field(schema.SEGMENT).is_valid()
            parts.append(video if self.media == "video" else ~video)
        if self.at_s is not None:
            parts.append((pc.field(schema.START_S) <= self.at_s) & (pc.field(schema.END_S) > self.at_s))
        if self.wrong_language:  # rows written before identification, or too short to tell, hold null: never match
            detected = pc.field(schema.DETECTED_LANG)
            parts.append(detected.is_valid() & (detected != pc.field(schema.LANG)))
        expression = None
        for part in parts:
            expression = part if expression is None else expression & part
        return expression


def _glob_to_like(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def select(out: str, where: Filter, columns: list[str] | None = None, ledger: bool = False,
           limit: int | None = None, options: dict | None = None) -> pa.RecordBatchReader:
    """Filtered rows of the captions (or, with ``ledger``, of the errors), streamed."""
    names = (schema.ERROR_FILE if ledger else schema.CAPTIONS).names
    unknown = sorted(set(columns or ()) - set(names))
    if unknown:
        raise QueryError(f"unknown column(s) {', '.join(unknown)}; columns are {', '.join(names)}")
    reader = scan(out, state.committed(out, options), columns, where.expression(ledger), ledger, options)
    return _limited(reader, limit) if limit is not None else reader


def scan(out: str, shards: list[state.Shard], columns: list[str] | None = None, where: pc.Expression | None = None,
         ledger: bool = False, options: dict | None = None) -> pa.RecordBatchReader:
    """The committed captions (or errors) of ``shards``, scanned SHARDS_PER_SCAN shards at a time.

    Arrow's threaded scan reads ahead of a reader slower than the files (a JSON export, a Python loop), holding
    up to about 1 GiB of rows before it pauses; a scan given a part of the output stops at the part's end, and the
    next part starts when the reader has taken the rows of the one before.
    """
    read = state.errors if ledger else state.captions
    parts = [shards[i:i + SHARDS_PER_SCAN] for i in range(0, len(shards), SHARDS_PER_SCAN)]

    def scanner(part: list[state.Shard]) -> pads.Scanner:
        return read(out, part, options).scanner(columns=columns, filter=where, batch_size=BATCH_ROWS)

    def batches() -> Iterator[pa.RecordBatch]:
        for part in parts:
            yield from scanner(part).to_reader()

    return pa.RecordBatchReader.from_batches(scanner([]).projected_schema, batches())


def _limited(reader: pa.RecordBatchReader, limit: int) -> pa.RecordBatchReader:
    def batches():
        left = limit
        for batch in reader:
            if left <= 0:
                break
            yield batch.slice(0, left)
            left -= batch.num_rows

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def sql(out: str, statement: str, options: dict | None = None,
        shards: list[state.Shard] | None = None) -> pa.RecordBatchReader:
    """Run SQL with DuckDB over the views ``captions`` and ``errors`` (of ``shards``, by default every committed
    one), streamed.

    DuckDB scans our Arrow datasets (committed files, read through fsspec), so no DuckDB extension is ever
    downloaded and S3 works wherever captioner's own reads do. Sorts, joins and large groupings spill to a scratch
    folder past SQL_MEMORY_LIMIT instead of growing with the output. A large result read slowly (as JSON) lets
    Arrow's scan run ahead up to its pause at about 1 GiB: views made of parts, as ``scan`` reads, cost DuckDB's
    sorts more memory than that saves.
    """
    import duckdb

    shards = state.committed(out, options) if shards is None else shards
    scratch = tempfile.TemporaryDirectory(prefix="captioner-sql-")
    connection = duckdb.connect(config={"memory_limit": SQL_MEMORY_LIMIT, "temp_directory": scratch.name})
    connection.register(schema.CAPTIONS_DIR, state.captions(out, shards, options))
    connection.register(schema.ERRORS_DIR, state.errors(out, shards, options))
    try:
        relation = connection.sql(statement)
    except duckdb.Error as exc:
        raise QueryError(str(exc).splitlines()[0]) from None
    if relation is None:
        raise QueryError("the SQL returned no rows to show; write a SELECT over captions or errors")
    reader = relation.to_arrow_reader(BATCH_ROWS)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:  # the scratch folder lives as long as the rows are read
            connection.close()
            scratch.cleanup()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def sample(out: str, limit: int, run_id: str | None = None, options: dict | None = None) -> list[dict]:
    """Up to ``limit`` caption rows (of ``run_id`` if given) for a quick look, the languages taking turns.

    Each language gives the first rows of a scan of its own files, so this reads a few files however large the
    output is; with a limit of at least the run's row count it returns every row, by URI, segment and language.
    """
    shards = [s for s in state.committed(out, options) if run_id is None or s.run_id == run_id]
    dataset = state.captions(out, shards, options)
    langs = sorted({state.file_lang(f) for f in state.caption_files(shards)})
    columns = [schema.URI, schema.SEGMENT, schema.START_S, schema.END_S, schema.LANG, schema.CAPTION, schema.SCORE]
    per_lang = -(-limit // max(len(langs), 1))
    heads = [dataset.head(per_lang, columns=columns, filter=pc.field(schema.LANG) == lang)  # its files only
             .sort_by([(schema.URI, "ascending"), (schema.SEGMENT, "ascending")]).to_pylist() for lang in langs]
    turns = [row for rows in itertools.zip_longest(*heads) for row in rows if row is not None][:limit]
    return sorted(turns, key=lambda r: (r[schema.URI], r[schema.SEGMENT] if r[schema.SEGMENT] is not None else -1,
                                        r[schema.LANG]))


def stats(out: str, options: dict | None = None, shards: list[state.Shard] | None = None, bins: int = 0) -> dict:
    """Counts from the commit markers and the run records, and each language's score figures (two streaming passes
    over the scores: see ``scores.summary``); with ``bins``, also the captions per score bin."""
    shards = state.committed(out, options) if shards is None else shards
    images = captioned = failed = caption_rows = 0
    errors_by_type: dict[str, int] = {}
    for shard in shards:
        images += shard.counts.get("images", 0)
        captioned += shard.counts.get("captioned", 0)
        failed += shard.counts.get("failed", 0)
        caption_rows += shard.counts.get("captions", 0)
        for kind, n in shard.errors_by_type.items():
            errors_by_type[kind] = errors_by_type.get(kind, 0) + n
    per_lang, histogram = scores.summary(lambda columns: scan(out, shards, columns, options=options), bins)
    figures = {
        "shards": len(shards),
        "images_processed": images,
        "captioned": captioned,
        "failed": failed,
        "caption_rows": caption_rows,
        "captions_per_language": {lang: row["captions"] for lang, row in per_lang.items()},
        "scores_per_language": per_lang,
        "language_check": {lang: {key: row[key] for key in ("captions", "wrong_language", "not_identified")}
                           for lang, row in per_lang.items()},
        "errors_by_type": errors_by_type,
        "fingerprints": sorted({f"{lang}:{fp}" for s in shards for lang, fp in s.fingerprints.items()}),
        "runs": state.run_records(out, options),
    }
    return {**figures, "histogram": histogram} if bins else figures
