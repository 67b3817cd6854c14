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


def test_parquet_gathers_small_batches_into_row_groups(monkeypatch):
    monkeypatch.setattr(export, "ROW_GROUP_ROWS", 3)
    batches = [TABLE.slice(i % 2, 1).to_batches()[0] for i in range(7)]
    sink = io.BytesIO()
    assert export.write(pa.RecordBatchReader.from_batches(TABLE.schema, batches), "parquet", sink) == 7
    written = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert [written.metadata.row_group(i).num_rows for i in range(written.num_row_groups)] == [3, 3, 1]
    assert written.read().equals(pa.Table.from_batches(batches))
