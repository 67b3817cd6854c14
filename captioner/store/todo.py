"""What is left to do: the manifest minus what the output holds, planned out of core by DuckDB.

The columns a plan reads are copied, batch by batch, from the manifest parts and the committed Parquet (on any
store) into a local scratch folder; DuckDB joins them there with a memory limit, spills past it, and keeps the
result in a database file; so planning 10^8 images needs disk, not a bigger driver. Nothing here makes a Python
object per image.

Images match on their full identity, so a changed object (new size or etag) is captioned again; identity
columns a manifest left empty are not compared. A video is done in a language once each of its segments is
captioned or failed for good. Images that failed for good are skipped unless ``retry_errors``; store failures
are always retried. ``attempt`` counts the earlier failed attempts of each image.
"""

import collections
import contextlib
import tempfile
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import schema
from . import manifest

MEMORY_LIMIT = "512MB"  # DuckDB's working memory while planning; more spills to its scratch folder
BATCH_ROWS = 200_000  # rows copied at a time into the scratch folder
Source = pa.Table | pads.Dataset


class Todo(contextlib.AbstractContextManager):
    """The to-do rows of one plan: (uri, size, etag, offset, error, langs, attempt[, source_caption], stored),
    sorted by URI; ``langs`` lists the languages each file still needs, comma-separated, in the run's order."""

    def __init__(self, listing: Source, captions: Source, errors: Source, languages: tuple[str, ...],
                 retry_errors: bool = False, source_language: str | None = None, threads: int | None = None):
        self._scratch = tempfile.TemporaryDirectory(prefix="captioner-plan-")
        settings = {"memory_limit": MEMORY_LIMIT, "temp_directory": self._scratch.name,
                    "preserve_insertion_order": True, **({"threads": threads} if threads else {})}
        self._db = duckdb.connect(f"{self._scratch.name}/plan.duckdb", config=settings)
        keys = [*schema.IDENTITY, schema.LANG, schema.SEGMENT, schema.SEGMENTS]
        texts = pc.field(schema.SEGMENT).is_valid()  # stored captions travel with partly done videos...
        if source_language:  # ...and with files to translate
            texts = texts | (pc.field(schema.LANG) == source_language)
        self._stage("listing_in", listing, None)
        self._stage("captions_in", captions, keys)
        self._stage("captions_text", captions, [*keys, schema.CAPTION, schema.RUN_ID], texts)
        self._stage("errors_in", errors, [*schema.IDENTITY, schema.SEGMENT, schema.ERROR_TYPE, schema.ATTEMPT])
        self._db.execute(_plan_sql(self._keys(), languages, retry_errors, source_language))
        self.rows = self._db.sql("SELECT count(*) FROM todo").fetchall()[0][0]

    def _stage(self, name: str, source: Source, columns: list[str] | None, where: pc.Expression | None = None) -> None:
        """Copy the columns a plan reads into a local Parquet file, batch by batch, and name it a view. DuckDB
        then reads local Parquet natively: it never calls back into Python, whatever store the source is on."""
        path = f"{self._scratch.name}/{name}.parquet"
        source = pads.dataset(source) if isinstance(source, pa.Table) else source
        scanner = source.scanner(columns=columns, filter=where, batch_size=BATCH_ROWS)
        with pq.ParquetWriter(path, scanner.projected_schema) as writer:
            for batch in scanner.to_batches():
                writer.write_batch(batch)
        self._db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")

    def _keys(self) -> list[str]:
        """The URI, and size and etag where the manifest knows them for every row (joins never match nulls)."""
        nulls = self._db.sql(f"SELECT count(*) - count({schema.SIZE}), count(*) - count({schema.ETAG}) "
                                 "FROM listing_in").fetchall()[0]
        return [schema.URI] + [c for c, n in zip((schema.SIZE, schema.ETAG), nulls) if n == 0]

    def per_language(self) -> dict[str, int]:
        """How many files still need each language."""
        found = self._db.sql(f"SELECT unnest(string_split({schema.LANGS}, ',')) AS lang, count(*) FROM todo "
                                 "GROUP BY lang ORDER BY lang").fetchall()
        return collections.OrderedDict(found)

    def batches(self, rows: int) -> Iterator[pa.Table]:
        """The to-do rows in URI order, ``rows`` at a time (the last batch may be shorter)."""
        reader = self._db.sql("SELECT * FROM todo").to_arrow_reader(rows)
        return manifest.regroup((pa.Table.from_batches([batch]) for batch in reader), rows)

    def table(self) -> pa.Table:
        """All the to-do rows at once: for tests and small plans."""
        return self._db.sql("SELECT * FROM todo").to_arrow_table()

    def close(self) -> None:
        self._db.close()
        self._scratch.cleanup()

    def __exit__(self, *exc) -> None:
        self.close()


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _plan_sql(keys: list[str], languages: tuple[str, ...], retry_errors: bool, source_language: str | None) -> str:
    k = ", ".join(keys)
    langs = "[" + ", ".join(_quote(lang) for lang in languages) + "]"
    transient = ", ".join(_quote(t) for t in sorted(schema.TRANSIENT_ERRORS))
    u, s, e, seg, segs, lang, cap = (schema.URI, schema.SIZE, schema.ETAG, schema.SEGMENT, schema.SEGMENTS,
                                     schema.LANG, schema.CAPTION)
    source = ""
    if source_language:
        source = (f"LEFT JOIN (SELECT {k}, arg_max({cap}, {schema.RUN_ID}) AS {schema.SOURCE_CAPTION} FROM captions_text "
                  f"WHERE {lang} = {_quote(source_language)} AND {seg} IS NULL GROUP BY {k}) USING ({k})")
    return f"""
    CREATE VIEW listing AS SELECT DISTINCT ON ({u}, {s}, {e}) * FROM listing_in;
    -- video segments that failed for good count as done (none when retrying errors)
    CREATE VIEW lost AS SELECT {k}, {seg} FROM errors_in
        WHERE {seg} IS NOT NULL AND {schema.ERROR_TYPE} NOT IN ({transient}) AND NOT {retry_errors};
    -- each file's failed attempts and its latest error; a caption in any language wins over a failure
    CREATE VIEW failed AS SELECT {k}, max({schema.ATTEMPT}) AS attempts,
            arg_max({schema.ERROR_TYPE}, {schema.ATTEMPT}) AS last_error
        FROM (SELECT * FROM errors_in WHERE {seg} IS NULL) ANTI JOIN (SELECT DISTINCT {k} FROM captions_in) USING ({k})
        GROUP BY {k};
    CREATE VIEW done AS
        SELECT {k}, {lang} FROM captions_in WHERE {seg} IS NULL
        UNION ALL
        SELECT {k}, {lang} FROM (
            SELECT {k}, {lang}, {seg}, {segs} FROM captions_in WHERE {seg} IS NOT NULL
            UNION ALL
            SELECT {k}, l.{lang}, {seg}, NULL FROM lost, (SELECT unnest({langs}) AS {lang}) AS l)
        GROUP BY {k}, {lang} HAVING count(DISTINCT {seg}) = max({segs});
    CREATE VIEW done_langs AS SELECT {k}, list(DISTINCT {lang}) AS done FROM done GROUP BY {k};
    CREATE VIEW video_captions AS SELECT {k}, json_group_object({seg}::VARCHAR, by_lang) AS captions
        FROM (SELECT {k}, {seg}, json_group_object({lang}, {cap}) AS by_lang FROM captions_text
              WHERE {seg} IS NOT NULL GROUP BY {k}, {seg})
        GROUP BY {k};
    CREATE VIEW video_lost AS SELECT {k}, to_json(list({seg} ORDER BY {seg})) AS failed FROM lost GROUP BY {k};
    CREATE TABLE todo AS
        SELECT * EXCLUDE (captions, failed, done, attempts, last_error),
            CASE WHEN captions IS NULL AND failed IS NULL THEN NULL
                 ELSE json_object('captions', coalesce(captions, '{{}}'::JSON), 'failed', coalesce(failed, '[]'::JSON))
            END AS {schema.STORED}
        FROM (
            SELECT *, array_to_string([x FOR x IN {langs} IF NOT list_contains(coalesce(done, []), x)], ',')
                    AS {schema.LANGS},
                coalesce(attempts, 0)::INTEGER AS {schema.ATTEMPT}
            FROM listing LEFT JOIN done_langs USING ({k}) LEFT JOIN failed USING ({k})
            WHERE {retry_errors} OR last_error IS NULL OR last_error IN ({transient})
        ) LEFT JOIN video_captions USING ({k}) LEFT JOIN video_lost USING ({k}) {source}
        WHERE {schema.LANGS} <> ''
        ORDER BY {u};
    """
