"""Rows as a caption actor hands them to the writer, for the tests of everything that reads an output."""

import numpy as np
import pyarrow as pa

from captioner import schema


def image_results(uris, failed=(), run_id="r", fingerprint="f", langs=("en", "fr"), empty=(), videos=None):
    """What a caption actor hands the writer: one row per image, and per segment of the ``videos`` (uri -> how
    many 10 s segments)."""
    rows = []
    for uri in [*uris, *(videos or {})]:
        row = {"uri": uri, "size": 1, "etag": "e", "run_id": run_id}
        if uri in failed:
            row.update(error_type=failed[uri], error="it failed", attempt=1)
            rows.append(row)
            continue
        row.update(width=4, height=3, model="m", model_revision=None,
                   results=[{"lang": lang, "caption": "" if uri in empty else f"{lang} {uri}", "score": -0.5,
                             "producer": "native", "num_candidates": 1, "fingerprint": fingerprint}
                            for lang in langs])
        count = (videos or {}).get(uri)
        rows += [{**row, "segment": k, "start_s": 10.0 * k, "end_s": 10.0 * k + 10, "segments": count,
                  "counted": k == 0} for k in range(count)] if count else [row]  # a video counts once
    return pa.Table.from_pylist(rows, schema=schema.IMAGE_RESULT)


def todo_rows(paths, langs="en"):
    """What the read stage is given: manifest rows with the languages each image still needs."""
    return {
        schema.URI: np.array([str(p) for p in paths], dtype=object),
        schema.SIZE: np.array([p.stat().st_size if p.exists() else np.nan for p in paths]),
        schema.ETAG: np.array(["e"] * len(paths), dtype=object),
        schema.LANGS: np.array([langs] * len(paths), dtype=object),
        schema.ATTEMPT: np.zeros(len(paths), dtype=np.int32),
    }
