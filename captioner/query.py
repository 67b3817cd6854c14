"""Reading the output back: committed captions and errors only, and the runs that wrote them."""

import pyarrow.compute as pc
import pyarrow.dataset as pads

from . import output, schema


def captions(out: str, options: dict | None = None) -> pads.Dataset:
    """Committed caption rows, ``lang`` included."""
    return output.captions(out, output.committed(out, options), options)


def errors(out: str, options: dict | None = None) -> pads.Dataset:
    """Committed error rows: the error ledger."""
    return output.errors(out, output.committed(out, options), options)


def sample(out: str, limit: int, run_id: str | None = None, options: dict | None = None) -> list[dict]:
    """Up to ``limit`` caption rows (of ``run_id`` if given), by URI then language, for a quick look."""
    rows = captions(out, options).to_table(
        columns=[schema.URI, schema.LANG, schema.CAPTION, schema.SCORE],
        filter=None if run_id is None else pc.field(schema.RUN_ID) == run_id,
    )
    return rows.sort_by([(schema.URI, "ascending"), (schema.LANG, "ascending")]).slice(0, limit).to_pylist()


def stats(out: str, options: dict | None = None) -> dict:
    """Counts from the commit markers (no Parquet is read) and the run records."""
    shards = output.committed(out, options)
    images = captioned = failed = caption_rows = 0
    errors_by_type: dict[str, int] = {}
    for shard in shards:
        images += shard.counts.get("images", 0)
        captioned += shard.counts.get("captioned", 0)
        failed += shard.counts.get("failed", 0)
        caption_rows += shard.counts.get("captions", 0)
        for kind, n in shard.errors_by_type.items():
            errors_by_type[kind] = errors_by_type.get(kind, 0) + n
    per_lang = captions(out, options).to_table(columns=[schema.LANG]).group_by(schema.LANG).aggregate(
        [(schema.LANG, "count")])
    return {
        "shards": len(shards),
        "images_processed": images,
        "captioned": captioned,
        "failed": failed,
        "caption_rows": caption_rows,
        "captions_per_language": dict(zip(per_lang[schema.LANG].to_pylist(), per_lang["lang_count"].to_pylist())),
        "errors_by_type": errors_by_type,
        "fingerprints": sorted({f"{lang}:{fp}" for s in shards for lang, fp in s.fingerprints.items()}),
        "runs": output.run_records(out, options),
    }
