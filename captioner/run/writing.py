"""The write stage: the language each caption reads as, then one shard of results per batch, in a task that
imports no model code (nor torch), so the GPU's process spends none of its time on it."""

import json

import pyarrow as pa
import pyarrow.compute as pc

from .. import langid, schema
from ..config import StorageConfig
from ..store import writer
from .reading import retried


def write(batch: pa.Table, output: str, store: StorageConfig, languages: tuple[str, ...] = ()) -> pa.Table:
    """Write one shard and hand its counts back to the driver for progress and the summary; ``languages`` are the
    run's, which the identifier may always name.

    A failed PUT is tried again (shard names are deterministic, so a retry replaces its own files)."""
    batch = identified(batch, languages)
    counts = retried(lambda: writer.write_shard(batch, output, store.options(output)), retry_on=(OSError,), give_up=())
    return pa.Table.from_pylist([{**counts, "languages": json.dumps(checked(batch))}])


def identified(images: pa.Table, languages: tuple[str, ...] = ()) -> pa.Table:
    """``images`` with each caption's detected language and its confidence filled in."""
    results = images[schema.RESULTS].combine_chunks()
    flat = results.flatten()  # the captions of every image, in order
    found, confidence = langid.identify(pc.struct_field(flat, schema.CAPTION).to_pylist(), languages)
    columns = {name: pc.struct_field(flat, name) for name in schema.CAPTION_RESULT.names}
    columns[schema.DETECTED_LANG] = pa.array(found, pa.string())
    columns[schema.DETECTED_LANG_CONFIDENCE] = pa.array(confidence, pa.float32())
    captions = pa.StructArray.from_arrays(list(columns.values()), fields=list(schema.CAPTION_RESULT))
    offsets = pc.subtract(results.offsets, results.offsets[0])  # a slice's offsets start past 0
    lists = pa.ListArray.from_arrays(offsets, captions, mask=results.is_null())
    return images.set_column(images.schema.get_field_index(schema.RESULTS), schema.RESULTS, lists)


def checked(images: pa.Table) -> dict[str, dict[str, int]]:
    """Per language: caption rows, those that read as another language, those whose language was not told."""
    flat = pc.list_flatten(images[schema.RESULTS])
    figures: dict[str, dict[str, int]] = {}
    for lang, found in zip(pc.struct_field(flat, schema.LANG).to_pylist(),
                           pc.struct_field(flat, schema.DETECTED_LANG).to_pylist()):
        row = figures.setdefault(lang, {"captions": 0, "wrong_language": 0, "not_identified": 0})
        row["captions"] += 1
        row["wrong_language"] += found is not None and found != lang
        row["not_identified"] += found is None
    return figures
