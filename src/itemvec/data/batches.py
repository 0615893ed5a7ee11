"""Reading an event file in chunks: Parquet row batches, streamed CSV, whole contexts per chunk.

Logs too big for memory are read here for every pass over them: counting
(``itemvec.counting.streamed``) and the streamed hold-out (``itemvec.data.streaming``). A chunk
holds whole contexts: ``grouped_tables`` carries a batch's last context into the next one when
the file is grouped by context, ``partition`` spills an ungrouped file to hash buckets first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from itemvec.config import IngestConfig
from itemvec.data.ingest import (
    ROW,
    as_string_ids,
    check_event_weights,
    event_table,
    event_types,
    file_format,
    first_data_row,
    sniff_separator,
)
from itemvec.util.errors import DataError

DEFAULT_CHUNK_ROWS = 4_000_000


_NULLS = ["", "NA", "null", "NULL"]


class NotGroupedError(Exception):
    """A context re-appeared after other contexts: the log is not grouped by context."""


def event_columns(ingest: IngestConfig) -> list[str]:
    """The columns of the log that ``ingest`` names, each once."""
    names = [ingest.context, ingest.item, ingest.time, ingest.event]
    return list(dict.fromkeys(c for c in names if c is not None))


def row_estimate(path: Path) -> int:
    """Rows of an event file: exact for Parquet, estimated from the first MB of a CSV."""
    if file_format(path) == "parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises ArrowInvalid & co. on a truncated file
            raise DataError(f"{path}: cannot read as parquet: {_first_line(exc)}; the file is "
                            "damaged or truncated, write it again") from None
    with open(path, "rb") as fh:
        sample = fh.read(1 << 20)
    per_row = max(len(sample) / max(sample.count(b"\n"), 1), 1.0)
    return int(path.stat().st_size / per_row) + 1


def iter_batches(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of at most ~``chunk_rows`` rows with ``columns``; CSV columns stay strings."""
    kind = file_format(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if kind == "parquet":
            yield from _parquet_batches(path, columns, chunk_rows)
        elif kind == "csv":
            yield from _csv_batches(path, columns, chunk_rows)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
            _require(frame.columns, columns, path)
            for start in range(0, frame.height, chunk_rows):
                yield frame.slice(start, chunk_rows).select(columns)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot read as {kind}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require(present: list[str], columns: list[str], path: Path) -> None:
    for column in columns:
        if column not in present:
            raise DataError(f"{path}: column {column!r} not found; columns present: "
                            f"{', '.join(present)}")


def _parquet_batches(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pl.DataFrame]:
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid & co.
        raise DataError(f"{path}: cannot read as parquet: {_first_line(exc)}") from None
    _require(handle.schema_arrow.names, columns, path)
    rows = handle.metadata.num_rows
    del handle
    # polars' reader decodes only the row groups (pages) a slice needs, several times faster
    # than pyarrow's iter_batches + from_arrow on string columns
    scan = pl.scan_parquet(path).select(columns)
    for start in range(0, rows, chunk_rows):
        yield scan.slice(start, chunk_rows).collect()


def _csv_batches(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pl.DataFrame]:
    separator = sniff_separator(path)
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = [h.strip('"') for h in fh.readline().rstrip("\r\n").split(separator)]
    _require(header, columns, path)
    # ~40 bytes per row is typical of event logs; blocks of that size give ~chunk_rows rows
    block = int(min(max(chunk_rows * 40, 1 << 20), 1 << 30))
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=block),
            parse_options=pacsv.ParseOptions(delimiter=separator),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types={c: pa.string() for c in columns},
                null_values=_NULLS, strings_can_be_null=True))
        for batch in reader:
            yield pl.from_arrow(batch)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: cannot parse as csv: {_first_line(exc)}") from None


def in_order(table: pl.DataFrame, has_time: bool, grouped: bool = False) -> bool:
    """True when rows already run in (ctx, time) order (most logs): the sort can be skipped.

    Run ids (``grouped``) never decrease, so only the times within a context are checked."""
    ctx = np.diff(table["ctx"].to_numpy())
    if not grouped and np.any(ctx < 0):
        return False
    if not has_time:
        return True
    step = np.diff(table["time"].to_numpy())
    return not np.any((step < 0) & (ctx == 0))


class _GroupCheck:
    """Exact check that no context re-appears after its run ended (sorted 64-bit hashes)."""

    def __init__(self) -> None:
        self.seen = np.zeros(0, np.uint64)

    def closed(self, contexts: pl.Series) -> None:
        """Record the contexts of a chunk whose runs are complete; fail if any was seen."""
        starts = (contexts != contexts.shift(1)).fill_null(True)
        hashes = np.sort(contexts.filter(starts).hash(seed=7).to_numpy())
        if len(hashes) > 1 and np.any(hashes[1:] == hashes[:-1]):
            raise NotGroupedError
        if len(self.seen) and len(hashes):
            at = np.minimum(np.searchsorted(self.seen, hashes), len(self.seen) - 1)
            if np.any(self.seen[at] == hashes):
                raise NotGroupedError
        self.seen = np.sort(np.concatenate([self.seen, hashes]), kind="stable")


def grouped_tables(path: Path, ingest: IngestConfig, chunk_rows: int,
                   progress) -> Iterator[pl.DataFrame]:
    """Validated event tables (``event_table``) of a log grouped by context, each holding whole
    contexts: the last (maybe unfinished) context of a batch is carried into the next. Raises
    ``NotGroupedError`` when a context re-appears."""
    check, carry, offset = _GroupCheck(), None, first_data_row(path)
    present: set[str] = set()
    for frame in iter_batches(path, event_columns(ingest), chunk_rows):
        frame = frame.with_row_index(ROW, offset=offset)
        offset += frame.height
        progress.update(frame.height)
        frame = frame if carry is None else pl.concat([carry, frame], how="vertical_relaxed")
        context = as_string_ids(frame, ingest.context)
        last = context[-1]
        tail = int((context == last).arg_true()[0]) if last is not None else frame.height
        carry, frame = frame.slice(tail), frame.slice(0, tail)
        if frame.height:
            check.closed(as_string_ids(frame, ingest.context))
            present |= event_types(frame, ingest, path)
            yield event_table(frame, ingest, path)
    if carry is not None and carry.height:
        check.closed(as_string_ids(carry, ingest.context))
        present |= event_types(carry, ingest, path)
        yield event_table(carry, ingest, path)
    check_event_weights(present, ingest, str(path))


def partition(path: Path, ingest: IngestConfig, chunk_rows: int, workdir: Path,
              progress: bool = True) -> list[Path]:
    """Spill the log to Parquet buckets by hash of context: each context lies in one bucket."""
    columns = event_columns(ingest)
    estimate = row_estimate(path)
    buckets = max(1, math.ceil(estimate / max(chunk_rows, 1)))
    writers: dict[int, pq.ParquetWriter] = {}
    paths = [workdir / f"bucket-{b:04d}.parquet" for b in range(buckets)]
    offset = first_data_row(path)
    bar = tqdm(total=estimate, desc="partitioning", unit="ev", unit_scale=True, disable=not progress)
    try:
        for frame in iter_batches(path, columns, chunk_rows):
            frame = frame.with_row_index(ROW, offset=offset)
            offset += frame.height
            bar.update(frame.height)
            key = (as_string_ids(frame, ingest.context).hash(seed=11) % buckets).alias("__bucket")
            for (bucket,), part in frame.with_columns(key).partition_by(
                    "__bucket", as_dict=True, include_key=False).items():
                table = part.to_arrow()
                if bucket not in writers:
                    writers[bucket] = pq.ParquetWriter(paths[bucket], table.schema)
                writers[bucket].write_table(table.cast(writers[bucket].schema))
    finally:
        for writer in writers.values():
            writer.close()
        bar.close()
    return [p for b, p in enumerate(paths) if b in writers]


def bucket_tables(buckets: list[Path], ingest: IngestConfig, progress,
                  source: str = "the event log") -> Iterator[pl.DataFrame]:
    """Validated event tables of ``partition``'s buckets (whole contexts, not grouped); once
    all are read, the event weights are checked against the event types seen."""
    present: set[str] = set()
    for bucket in buckets:
        frame = pl.read_parquet(bucket)
        progress.update(frame.height)
        present |= event_types(frame, ingest, bucket)
        yield event_table(frame, ingest, bucket)
    check_event_weights(present, ingest, source)
