"""Event logs that are already in memory: DataFrames, Arrow tables, lists of item sequences.

``read_events`` reads files; a notebook user holds a pandas or polars DataFrame, a pyarrow
Table or a plain list of sessions (gensim's "sentences"). They become the same ``EventLog``
through the same validation (``event_table``), so ids, nulls, times and event weights follow
the rules a file follows; messages name the DataFrame row (0-based, as ``df.iloc`` counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from itemvec.config import IngestConfig
from itemvec.data.ingest import (
    MAX_ID_BYTES,
    ROW,
    EventLog,
    as_string_ids,
    build_log,
    check_id_length,
    check_not_null,
    log_from_frame,
    require_columns,
)
from itemvec.util.errors import DataError

FRAME_SOURCE = "<DataFrame>"
SEQUENCE_SOURCE = "<sequences>"
FIT_OPTIONS = ("context=", "item=", "time=", "event=", "order=")  # ItemVec.fit's names for the columns


def is_frame(data: Any) -> bool:
    """pandas / polars DataFrames and pyarrow Tables (checked by type name: no hard imports)."""
    kind = type(data)
    return (isinstance(data, pl.DataFrame)
            or (kind.__name__ == "DataFrame" and kind.__module__.startswith("pandas"))
            or (kind.__name__ == "Table" and kind.__module__.startswith("pyarrow")))


def as_polars(data: Any) -> pl.DataFrame:
    """A polars DataFrame from pandas, pyarrow or polars input."""
    if isinstance(data, pl.DataFrame):
        return data
    try:
        frame = pl.from_pandas(data) if type(data).__module__.startswith("pandas") \
            else pl.from_arrow(data)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{FRAME_SOURCE}: cannot convert {type(data).__name__} to a table: "
                        f"{str(exc).splitlines()[0]}") from None
    if not isinstance(frame, pl.DataFrame):
        raise DataError(f"{FRAME_SOURCE}: expected a table, got {type(data).__name__}")
    return frame


def events_from_frame(data: Any, config: IngestConfig, source: str = FRAME_SOURCE) -> EventLog:
    """An ``EventLog`` from a DataFrame / Arrow table with the columns ``config`` names."""
    frame = as_polars(data)
    if frame.height == 0:
        raise DataError(f"{source}: the table has no rows")
    return log_from_frame(frame, config, Path(source), 0, FIT_OPTIONS)


def events_from_sequences(sequences: Iterable[Sequence[Any]], config: IngestConfig) -> EventLog:
    """An ``EventLog`` from item-id sequences, one per context, in the order given: whether
    that order makes them sessions or baskets is ``config.context_kind``, decided from the
    sequences under ``auto``. Ids become strings as in files: 7 -> "7"."""
    contexts: list[int] = []
    items: list[str] = []
    for position, sequence in enumerate(sequences):
        if isinstance(sequence, str | bytes) or not isinstance(sequence, Iterable):
            raise DataError(f"{SEQUENCE_SOURCE}: context {position} is {type(sequence).__name__}"
                            f" {sequence!r}; give each context as a list of item ids")
        ids = [_id_text(item, position) for item in sequence]
        contexts.extend([position] * len(ids))
        items.extend(ids)
    if not items:
        raise DataError(f"{SEQUENCE_SOURCE}: no events (every sequence is empty)")
    table = pl.DataFrame({"context": pl.Series(np.asarray(contexts)).cast(pl.String),
                          "item": items, ROW: np.arange(len(items), dtype=np.int64),
                          "weight": np.ones(len(items), dtype=np.float32)})
    return build_log(table, config, source=SEQUENCE_SOURCE, order_given=True)


def _id_text(item: Any, position: int) -> str:
    if item is None or (isinstance(item, float) and not np.isfinite(item)):
        raise DataError(f"{SEQUENCE_SOURCE}: context {position} holds a missing item id "
                        f"({item!r})")
    if isinstance(item, float) and item.is_integer():
        return str(int(item))  # 7.0 -> "7", as for files
    text = str(item)
    if not text.strip():
        raise DataError(f"{SEQUENCE_SOURCE}: context {position} holds a blank item id")
    if len(text.encode()) > MAX_ID_BYTES:
        raise DataError(f"{SEQUENCE_SOURCE}: context {position} holds an id of "
                        f"{len(text.encode()):,} bytes, longer than the limit of "
                        f"{MAX_ID_BYTES:,} bytes")
    return text


def items_from_frame(data: Any, key: str, source: str | Path = "<items DataFrame>",
                     option: str = "item_key=", first_row: int = 0) -> pl.DataFrame:
    """An item table (``item_id`` first, other columns as given) keyed by string id, with the
    id rules of the event log (7.0 -> "7"; null or blank ids are errors naming the row, counted
    from ``first_row``). Shared by item table files and DataFrames."""
    frame = as_polars(data)
    where = Path(source)
    require_columns(frame, {option: key}, where)
    ids = as_string_ids(frame, key, where)
    rows = pl.Series(np.arange(first_row, first_row + frame.height))
    check_not_null(ids, key, rows, where)
    check_id_length(ids, key, rows, where)
    frame = frame.drop(key).with_columns(ids.alias("item_id"))
    frame = frame.select(["item_id", *[c for c in frame.columns if c != "item_id"]])
    return frame.unique("item_id", keep="first", maintain_order=True)
