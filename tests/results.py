"""Rows as a caption actor hands them to the writer, for the tests of everything that reads an output."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from captioner import schema


def image_results(uris, failed=(), run_id="r", fingerprint="f", langs=("en", "fr"), empty=(), videos=None,
                  texts=None):
    """What a caption actor hands the writer: one row per image, and per segment of the ``videos`` (uri -> how
    many 10 s segments); ``texts`` gives some (uri, lang) their caption."""
    rows = []
    for uri in [*uris, *(videos or {})]:
        row = {"uri": uri, "size": 1, "etag": "e", "run_id": run_id}
        if uri in failed:
            row.update(error_type=failed[uri], error="it failed", attempt=1)
            rows.append(row)
            continue
        row.update(width=4, height=3, model="m", model_revision=None,
                   results=[{"lang": lang, "caption": "" if uri in empty else (texts or {}).get((uri, lang), f"{lang} {uri}"),
                             "score": -0.5,
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


# A mixed output: a shard written before captions had a detected language, then one after, whose fr row of
# new/b.jpg holds English.
OLD_TEXTS = {("old/c.jpg", "en"): "a red bus driving down a busy street",
             ("old/c.jpg", "fr"): "un bus rouge roule dans une rue animée"}
NEW_TEXTS = {("new/a.jpg", "en"): "a dog sleeping on a sofa in the living room",
             ("new/a.jpg", "fr"): "un chien qui dort sur un canapé dans le salon",
             ("new/b.jpg", "en"): "two children playing football in a park",
             ("new/b.jpg", "fr"): "two children playing football in a park"}


def mixed_output(out) -> None:
    """Write the mixed output to ``out``: the old shard's caption files lack both detected_lang columns, as files
    written before them do."""
    from captioner import schema
    from captioner.run import writing
    from captioner.store import state, writer

    writer.write_shard(image_results(["old/c.jpg"], run_id="r1", texts=OLD_TEXTS), str(out))
    (old,) = state.committed(str(out))
    for name in old.files:
        path = f"{out}/{name}"
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([schema.DETECTED_LANG, schema.DETECTED_LANG_CONFIDENCE]), path)
    batch = image_results(["new/a.jpg", "new/b.jpg"], run_id="r2", texts=NEW_TEXTS)
    writer.write_shard(writing.identified(batch, ("en", "fr")), str(out))
