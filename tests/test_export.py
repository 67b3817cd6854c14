import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from captioner import export

TABLE = pa.table({"uri": ["a", "b"], "caption": ["un cercle « rouge »", "x, \"quoted\""], "score": [-0.5, None]})


def _write(fmt):
    sink = io.BytesIO()
    rows = export.write(pa.RecordBatchReader.from_batches(TABLE.schema, TABLE.to_batches(max_chunksize=1)), fmt, sink)
    assert rows == 2
    return sink.getvalue()


def test_json_lines_round_trip():
    assert [json.loads(line) for line in _write("json").decode().splitlines()] == TABLE.to_pylist()


def test_csv_round_trip():
    rows = list(csv.DictReader(io.StringIO(_write("csv").decode())))
    assert [r["caption"] for r in rows] == TABLE["caption"].to_pylist()


def test_parquet_round_trip():
    assert pq.read_table(io.BytesIO(_write("parquet"))).equals(TABLE)


def test_table_is_aligned():
    lines = _write("table").decode().splitlines()
    assert lines[0].split() == ["uri", "caption", "score"]
    assert lines[1].index("un cercle") == lines[0].index("caption") and "-0.500" in lines[1]
