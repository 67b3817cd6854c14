"""Reading the output back: the captions and errors datasets, and the rows of one run."""

import pyarrow.compute as pc
import pyarrow.dataset as pads

from . import schema, storage


def captions(output: str, options: dict | None = None) -> pads.Dataset:
    """The captions dataset with ``lang`` from the hive partition directories."""
    fs, root = storage.filesystem(output, options)
    return pads.dataset(storage.join(root, schema.CAPTIONS_DIR), filesystem=fs, format="parquet",
                        partitioning="hive", schema=schema.CAPTIONS)


def errors(output: str, options: dict | None = None) -> pads.Dataset:
    fs, root = storage.filesystem(output, options)
    return pads.dataset(storage.join(root, schema.ERRORS_DIR), filesystem=fs, format="parquet",
                        schema=schema.ERROR_FILE)


def sample(output: str, limit: int, run_id: str | None = None, options: dict | None = None) -> list[dict]:
    """Up to ``limit`` caption rows (of ``run_id`` if given), by URI then language, for a quick look."""
    fs, root = storage.filesystem(output, options)
    if not fs.exists(storage.join(root, schema.CAPTIONS_DIR)):
        return []
    rows = captions(output, options).to_table(
        columns=[schema.URI, schema.LANG, schema.CAPTION, schema.SCORE],
        filter=None if run_id is None else pc.field(schema.RUN_ID) == run_id,
    )
    return rows.sort_by([(schema.URI, "ascending"), (schema.LANG, "ascending")]).slice(0, limit).to_pylist()
