"""Streaming query results out as a table, JSON lines, CSV or Parquet, one batch at a time."""

import io
import json
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

CELL = 60  # widest cell the table format prints
ROW_GROUP_ROWS = 131_072  # rows per Parquet row group written


def write(reader: pa.RecordBatchReader, fmt: str, sink: BinaryIO) -> int:
    """Write every batch of ``reader`` to ``sink`` in ``fmt``; returns the row count."""
    return {"table": _table, "json": _json, "csv": _csv, "parquet": _parquet}[fmt](reader, sink)


def _table(reader: pa.RecordBatchReader, sink: BinaryIO) -> int:
    """Aligned columns, widths taken from the header and the first batch so rows still stream."""
    text = io.TextIOWrapper(sink, encoding="utf-8", write_through=True)
    names = reader.schema.names
    widths = None
    rows = 0
    for batch in reader:
        cells = [[_cell(row[name]) for name in names] for row in batch.to_pylist()]
        if widths is None:
            widths = [max([len(name)] + [len(r[i]) for r in cells]) for i, name in enumerate(names)]
            text.write(_line(names, widths))
        for row in cells:
            text.write(_line(row, widths))
        rows += batch.num_rows
    if widths is None:
        text.write(_line(names, [len(n) for n in names]))
    text.detach()
    return rows


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = "" if value is None else str(value)
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def _json(reader: pa.RecordBatchReader, sink: BinaryIO) -> int:
    rows = 0
    for batch in reader:
        for row in batch.to_pylist():
            sink.write(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        rows += batch.num_rows
    return rows


def _csv(reader: pa.RecordBatchReader, sink: BinaryIO) -> int:
    rows = 0
    with pcsv.CSVWriter(sink, reader.schema) as out:
        for batch in reader:
            out.write_batch(batch)
            rows += batch.num_rows
    return rows


def _parquet(reader: pa.RecordBatchReader, sink: BinaryIO) -> int:
    """Batches gathered into row groups of ROW_GROUP_ROWS. A row group per batch (a scanned file's rows, often a
    thousand) makes thousands of tiny row groups, whose metadata the writer holds until it closes: memory would
    grow with the rows written."""
    rows = pending = 0
    held: list[pa.RecordBatch] = []
    with pq.ParquetWriter(sink, reader.schema, compression="zstd") as out:
        for batch in reader:
            held.append(batch)
            rows += batch.num_rows
            pending += batch.num_rows
            if pending >= ROW_GROUP_ROWS:
                out.write_table(pa.Table.from_batches(held, reader.schema))
                held, pending = [], 0
        if held:
            out.write_table(pa.Table.from_batches(held, reader.schema))
    return rows
