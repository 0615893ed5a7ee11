"""Read event logs (CSV/TSV, Parquet, JSONL) into contexts of item indices.

A *context* is whatever groups co-occurring items: a session, a basket, an order, a user's
history. ``read_events`` validates the named columns, orders events in time, splits sessions at
gaps of inactivity and encodes item ids (always strings) as dense integer indices.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.config import IngestConfig
from itemvec.data.context_kind import KindDecision, decide_kind, explicit
from itemvec.data.lines import LAYOUTS, line_events, separator_for
from itemvec.data.sources import (
    compression,
    describe,
    expand_paths,
    head_bytes,
    plain_name,
    read_bytes,
)
from itemvec.util.errors import DataError

logger = logging.getLogger(__name__)

EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".inter": "recbole",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}  # each also compressed: .gz, .zst
ROW = "__row"
MAX_ID_BYTES = 4096  # item and context ids are keys: longer ones are refused (UTF-8 bytes)
_RECBOLE_TYPE = re.compile(r"^(.+):(token|token_seq|float|float_seq)$")


@dataclass(frozen=True)
class Reading:
    """How files are laid out (``ingest.format``, ``sep``, ``header``, ``columns``,
    ``encoding``); the defaults read any CSV/TSV/Parquet/JSONL with a header."""

    format: str = "auto"
    sep: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    encoding: str | None = None

    @classmethod
    def of(cls, config: IngestConfig) -> Reading:
        return cls(config.format, config.sep, config.header,
                   tuple(config.columns) if config.columns else None, config.encoding)

    @property
    def is_default(self) -> bool:
        return self == Reading()


DEFAULT_READING = Reading()


@dataclass
class EventLog:
    """Contexts as CSR-style arrays over a string vocabulary.

    Events of context ``c`` are ``items[indptr[c]:indptr[c+1]]`` in time order (or file order),
    with per-event ``weights`` and, when the log has a clock, ``times`` in seconds.
    """

    item_ids: np.ndarray  # vocabulary: index -> item id (str), most frequent first
    context_ids: np.ndarray  # context index -> context id (str)
    indptr: np.ndarray  # int64, len = n_contexts + 1
    items: np.ndarray  # int32 item index per event
    weights: np.ndarray  # float32 weight per event
    times: np.ndarray | None  # float64 seconds per event, or None
    ordered: bool  # True: sessions (order matters); False: baskets
    source: str = ""
    decision: KindDecision | None = None  # why sessions or baskets (``context_kind``)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_contexts(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_events(self) -> int:
        return len(self.items)

    def context(self, c: int) -> np.ndarray:
        return self.items[self.indptr[c] : self.indptr[c + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def context_end_times(self) -> np.ndarray | None:
        """Time of each context's last event (used for the time-based split)."""
        if self.times is None:
            return None
        out = np.full(self.n_contexts, -np.inf)
        nonempty = self.lengths() > 0
        if nonempty.any():  # max, not last: baskets keep file order, not time order
            out[nonempty] = np.maximum.reduceat(self.times, self.indptr[:-1][nonempty])
        return out

    def subset(self, contexts: np.ndarray) -> EventLog:
        """A log with only the given contexts (same vocabulary)."""
        contexts = np.asarray(contexts, dtype=np.int64)
        starts, stops = self.indptr[contexts], self.indptr[contexts + 1]
        take = _ranges(starts, stops)
        indptr = np.zeros(len(contexts) + 1, dtype=np.int64)
        np.cumsum(stops - starts, out=indptr[1:])
        return EventLog(
            item_ids=self.item_ids, context_ids=self.context_ids[contexts], indptr=indptr,
            items=self.items[take], weights=self.weights[take],
            times=None if self.times is None else self.times[take],
            ordered=self.ordered, source=self.source, decision=self.decision,
        )

    def kind_decision(self) -> dict[str, Any]:
        """The context kind and why, for stats and manifests."""
        decision = self.decision or explicit("session" if self.ordered else "basket")
        return decision.to_dict()

    def item_counts(self) -> np.ndarray:
        """Number of contexts each item occurs in (items are deduplicated per context)."""
        # Rows are contexts: summing duplicates sorts within each row only, far cheaper than one
        # global sort of (context, item) keys on long logs (0.14 s vs ~8 s at 10M events).
        # copy=True: sum_duplicates sorts the index arrays in place, i.e. the log's own items.
        incidence = sp.csr_matrix((np.ones(len(self.items), dtype=np.int32), self.items,
                                   self.indptr), shape=(self.n_contexts, self.n_items), copy=True)
        incidence.sum_duplicates()
        return np.bincount(incidence.indices, minlength=self.n_items)


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for every pair, vectorised."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def file_format(path: Path, reading: Reading = DEFAULT_READING) -> str:
    """csv, parquet, jsonl, recbole, sequences or baskets: ``--format`` where given, else from
    the extension (compression suffixes aside); an unknown extension reads as delimited text
    when ``--sep`` says how."""
    if reading.format in (*LAYOUTS, "recbole"):
        return reading.format
    if path.is_dir():
        return "parquet"  # a partitioned Parquet directory (sources.directory_sources)
    name = plain_name(path)
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return EXTENSIONS[ext]
    if reading.sep is not None or reading.format == "table":
        return "csv"
    known = ", ".join(sorted(EXTENSIONS))
    raise DataError(f"{path}: unknown file extension {path.suffix!r}; known: {known} (each "
                    "also .gz/.zst); for other delimited text give --sep, e.g. --sep '\\t'")


def sniff_separator(path: Path, reading: Reading = DEFAULT_READING) -> str:
    if reading.sep is not None:
        return reading.sep
    name = plain_name(path)
    if name.endswith((".tsv", ".inter")):
        return "\t"
    try:
        header = head_bytes(path).split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({getattr(exc, 'strerror', None) or exc})") \
            from None
    counts = {sep: header.count(sep) for sep in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def read_table(path: str | Path, reading: Reading = DEFAULT_READING) -> pl.DataFrame:
    """Read any supported table with every column as a string; ids stay exactly as written.
    ``reading`` says how it is laid out (separator, header, column names, encoding)."""
    path = Path(path)
    kind = file_format(path, reading)
    if kind in LAYOUTS:
        raise DataError(f"{path}: --format {kind} holds events, not a table")
    _check_file(path)
    try:
        frame = _read(_source(path, kind, reading.encoding), kind, path, reading)
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: file is empty") from None
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError) as exc:
        bad = kind != "parquet" and reading.encoding is None and "utf-8" in str(exc).lower() \
            and not_utf8(path, read_bytes(path))
        if bad:
            raise bad from None
        raise DataError(f"{path}: cannot parse as {kind}: "
                        f"{_explain(exc, path, kind, reading)}") from None
    frame = _without_trailing_blank_rows(frame) if kind in ("csv", "recbole") else frame
    if frame.height == 0:
        raise DataError(f"{path}: file has a header but no rows")
    return _name_columns(frame, path, kind, reading)


def not_utf8(path: Path, data: bytes) -> DataError | None:
    """The error for text that is not UTF-8, naming the first bad byte's row and offset (None
    for valid UTF-8). No guessing: a fallback decode would garble every non-ASCII id of a
    mostly-UTF-8 file."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.end]
        return DataError(f"{path}: row {row}, byte {exc.start}: {bad!r} is not valid UTF-8; "
                         "say the file's encoding, e.g. --encoding latin-1 or cp1252")
    return None


def _without_trailing_blank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Blank lines at the end of a headerless file are not rows (earlier rows keep their
    numbers, so messages still point at the right line)."""
    blank = frame.select(pl.all_horizontal(pl.all().is_null()))
    filled = (~blank.to_series()).arg_true()
    last = int(filled[-1]) + 1 if len(filled) else 0
    return frame if last == frame.height else frame.slice(0, last)


def _check_file(path: Path) -> None:
    if path.is_dir() and file_format(path) == "parquet":
        return
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    _reject_utf16(path)


def _source(path: Path, kind: str, encoding: str | None) -> Path | io.BytesIO:
    """What polars reads: the path itself, or decompressed / re-encoded (UTF-8) bytes."""
    if compression(path) is None and (encoding is None or kind == "parquet"
                                      or codecs_name(encoding) == "utf-8"):
        return path
    data = read_bytes(path)
    if encoding is not None and kind != "parquet" and codecs_name(encoding) != "utf-8":
        data = decoded(path, data, encoding).encode()
    return io.BytesIO(data)


def decoded(path: Path, data: bytes, encoding: str | None) -> str:
    """``data`` as text in ``encoding`` (default UTF-8, a BOM dropped); bytes that do not
    decode are one line naming the file and the byte (and the row, for UTF-8)."""
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        if encoding:
            raise DataError(f"{path}: byte {exc.start} is not valid {encoding}; check "
                            "--encoding") from None
        raise not_utf8(path, data) or DataError(f"{path}: not valid UTF-8") from None


def codecs_name(encoding: str) -> str:
    """'UTF8', 'utf_8' -> 'utf-8' (Python's canonical codec name)."""
    return codecs.lookup(encoding).name


def _read(source: Path | io.BytesIO, kind: str, path: Path, reading: Reading) -> pl.DataFrame:
    if kind in ("csv", "recbole"):
        return pl.read_csv(source, separator=sniff_separator(path, reading), infer_schema=False,
                           null_values=["", "NA", "null", "NULL"], encoding="utf8",
                           truncate_ragged_lines=False, has_header=reading.header)
    if kind == "parquet":
        if path.is_dir():
            return pl.read_parquet(path, hive_partitioning=True)
        return pl.read_parquet(source)
    if isinstance(source, Path) and _is_blank(path):
        raise pl.exceptions.NoDataError("only whitespace")
    return pl.read_ndjson(source, infer_schema_length=None)


def _name_columns(frame: pl.DataFrame, path: Path, kind: str, reading: Reading) -> pl.DataFrame:
    """RecBole's typed names (``user_id:token``) lose their type; ``--columns`` names (or
    renames) every column, and must count them right. A name twice in a header is an error
    (polars would rename the second ``NAME_duplicated_0`` and the first would silently win)."""
    if reading.columns is None:
        _check_unique_names(frame.columns, path)
    if kind == "recbole" or all(_RECBOLE_TYPE.match(c) for c in frame.columns):
        frame = frame.rename({c: m.group(1) for c in frame.columns
                              if (m := _RECBOLE_TYPE.match(c))})
    if reading.columns is None:
        return frame
    if len(reading.columns) != frame.width:
        first = ", ".join(frame.columns[:8]) + (", ..." if frame.width > 8 else "")
        raise DataError(f"{path}: --columns names {len(reading.columns)} columns but the file "
                        f"has {frame.width} ({first}; separator "
                        f"{sniff_separator(path, reading)!r}); name each column once or fix "
                        "--sep")
    return frame.rename(dict(zip(frame.columns, reading.columns, strict=True)))


def _check_unique_names(columns: list[str], path: Path) -> None:
    for position, name in enumerate(columns):
        match = re.fullmatch(r"(.+)_duplicated_\d+", name)
        if match and match.group(1) in columns:
            first = columns.index(match.group(1))
            raise DataError(f"{path}: column name {match.group(1)!r} appears twice in the header "
                            f"(columns {first + 1} and {position + 1}); rename one")


def _reject_utf16(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") and not head.startswith(b"PAR1"):
        raise DataError(f"{path}: file is UTF-16 encoded; re-save it as UTF-8")


def _is_blank(path: Path, limit: int = 1 << 20) -> bool:
    """True for a small file holding only whitespace (polars then fails with an odd message)."""
    return path.stat().st_size <= limit and not path.read_bytes().strip()


def _explain(exc: BaseException, path: Path, kind: str, reading: Reading) -> str:
    """The first line of a parser error, with the offending CSV row where we can find it."""
    if kind in ("csv", "recbole") and compression(path) is None:
        located = _locate_csv_problem(path, reading)
        if located:
            return located
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _locate_csv_problem(path: Path, reading: Reading, max_rows: int = 5_000_000) -> str | None:
    """Re-read a CSV that polars rejected with Python's csv module to name the bad row."""
    separator = sniff_separator(path, reading)
    header = "the header" if reading.header else "the first row"
    try:
        with open(path, encoding=reading.encoding or "utf-8-sig", errors="replace",
                  newline="") as fh:
            reader = csv.reader(fh, delimiter=separator, strict=True)
            width = None
            for row in reader:
                if width is None:
                    width = len(row)
                elif row and len(row) != width:
                    return (f"row {reader.line_num} has {len(row)} fields but {header} has "
                            f"{width} (separator {separator!r}); quote values that contain it")
                if reader.line_num > max_rows:
                    return None
    except csv.Error as exc:
        return f"row {reader.line_num}: {exc}"
    except (OSError, EOFError, DataError):
        return None
    return None


def require_columns(frame: pl.DataFrame, columns: dict[str, str | None], path: Path) -> None:
    """Fail with the missing column and the columns present."""
    for option, column in columns.items():
        if column is not None and column not in frame.columns:
            present = ", ".join(frame.columns)
            raise DataError(f"{path}: column {column!r} (from {option}) not found; "
                            f"columns present: {present}")


def as_string_ids(frame: pl.DataFrame, column: str, path: Path | str = "") -> pl.Series:
    series = frame[column]
    if series.dtype == pl.String:
        return series
    if series.dtype.is_float():
        # 7.0 -> "7": ids written as floats by some exporters
        as_int = series.cast(pl.Int64, strict=False)
        if (as_int.cast(pl.Float64) == series).fill_null(True).all():
            return as_int.cast(pl.String)
    if isinstance(series.dtype, pl.List | pl.Struct | pl.Array | pl.Object):
        raise DataError(f"{path}: column {column!r} holds {series.dtype}, expected scalar ids")
    try:
        return series.cast(pl.String)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: column {column!r} ({series.dtype}) cannot be read as text ids: "
                        f"{str(exc).strip().splitlines()[0]}") from None


def check_not_null(values: pl.Series, column: str, rows: pl.Series, path: Path,
                   what: str = "values") -> None:
    """Null (empty, NA, null) and blank (whitespace-only) cells are errors naming how many and
    the first such row."""
    nulls = values.is_null()
    if values.dtype == pl.String:
        nulls = nulls | (values.str.strip_chars() == "")
    if nulls.any():
        first = int(rows.filter(nulls)[0])
        raise DataError(f"{path}: row {first}: column {column!r} is empty, NA or null: "
                        f"{int(nulls.sum())} rows have missing {what}, first at row {first}; "
                        "fill them in or drop those rows")


def check_id_length(values: pl.Series, column: str, rows: pl.Series, path: Path | str) -> None:
    """Ids of more than ``MAX_ID_BYTES`` are errors naming the first such row: ids are keys,
    and one megabyte-long id must not be mistaken for one (or cost memory per item)."""
    lengths = values.str.len_bytes()
    long = (lengths > MAX_ID_BYTES).fill_null(False)
    if long.any():
        first = int(long.arg_true()[0])
        raise DataError(f"{path}: row {int(rows[first])}: column {column!r}: id of "
                        f"{int(lengths[first]):,} bytes is longer than the limit of "
                        f"{MAX_ID_BYTES:,} bytes ({int(long.sum())} rows); shorten the ids or "
                        "keep long text in an item table column")


def parse_times(values: pl.Series, column: str, rows: pl.Series, path: Path) -> np.ndarray:
    """Numbers (any unit) or ISO-8601 timestamps -> finite float seconds."""
    if values.dtype.is_numeric():
        seconds = values.cast(pl.Float64).to_numpy()
    elif values.dtype == pl.Date or isinstance(values.dtype, pl.Datetime):
        seconds = values.cast(pl.Datetime("us")).dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6
    elif values.dtype == pl.String or isinstance(values.dtype, pl.Categorical | pl.Enum):
        seconds = _parse_text_times(values.cast(pl.String), column, rows, path)
    else:
        raise DataError(f"{path}: column {column!r} holds {values.dtype}; --time needs numbers "
                        "or ISO-8601 timestamps")
    bad = ~np.isfinite(seconds)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {int(rows[first])}: column {column!r}: time "
                        f"{seconds[first]} is not a finite number")
    return seconds


def _parse_text_times(values: pl.Series, column: str, rows: pl.Series, path: Path) -> np.ndarray:
    text = values.str.strip_chars()
    numeric = text.cast(pl.Float64, strict=False)
    if numeric.null_count() == 0:
        return numeric.to_numpy()
    if numeric[0] is not None:  # a numeric clock with a stray value: name that value
        first = int(numeric.is_null().arg_true()[0])
        raise DataError(f"{path}: row {int(rows[first])}: column {column!r}: cannot parse time "
                        f"{text[first]!r}; expected a number like the rows before it")
    try:
        parsed = text.str.to_datetime(strict=False, time_zone="UTC")
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        parsed = pl.Series([None] * len(text), dtype=pl.Datetime("us", "UTC"))
    bad = parsed.is_null()
    if bad.any():
        first = int(bad.arg_true()[0])
        raise DataError(f"{path}: row {int(rows[first])}: column {column!r}: cannot parse time "
                        f"{text[first]!r}; use numbers or ISO-8601 like 2024-01-31T12:00:00")
    return parsed.dt.epoch("us").cast(pl.Float64).to_numpy() / 1e6


def read_events(paths: str | Path | Iterable[str | Path], config: IngestConfig) -> EventLog:
    """Read an event log -- one file, several, globs or directories, laid out as
    ``config`` says -- into time-ordered contexts over a string vocabulary. Events of all
    files form one log (a context id in two files is one context)."""
    sources = expand_paths(paths)
    reading = Reading.of(config)
    tables, present = [], set()
    for path in sources:
        table, types = file_events(path, config, reading)
        tables.append(table)
        present |= types
    source = describe(sources)
    table = tables[0] if len(tables) == 1 else _renumbered(tables)
    check_event_weights(present, config, source)
    if table.height == 0:
        raise DataError(f"{source}: no events left after applying event weights")
    ordered_lines = any(file_format(p, reading) == "sequences" for p in sources)
    return build_log(table, config, source=source, order_given=ordered_lines)


def file_events(path: Path, config: IngestConfig,
                reading: Reading | None = None) -> tuple[pl.DataFrame, set[str]]:
    """One file's validated event table (``event_table``) and the event types it holds; laid
    out as ``reading`` says (default: ``config``'s layout settings)."""
    reading = reading or Reading.of(config)
    kind = file_format(path, reading)
    if kind in LAYOUTS:
        return _line_table(path, kind, reading), set()
    return frame_events(read_table(path, reading), config, path, first_data_row(path, reading))


def _line_table(path: Path, layout: str, reading: Reading) -> pl.DataFrame:
    _check_file(path)
    text = decoded(path, read_bytes(path), reading.encoding)
    events = line_events(text, layout, separator_for(plain_name(path), reading.sep))
    if events.height == 0:
        raise DataError(f"{path}: no items found in --format {layout} lines")
    for column in ("context", "item"):
        check_id_length(events[column], column, events["line"], path)
    return events.select("context", "item", pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW),
                         pl.lit(1.0, pl.Float32).alias("weight"))


def _renumbered(tables: list[pl.DataFrame]) -> pl.DataFrame:
    """Tables of several files as one, ``ROW`` running on across files (file order breaks
    time ties, as row order does within a file)."""
    table = pl.concat(tables, how="vertical_relaxed")
    return table.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW))


def event_types(frame: pl.DataFrame, config: IngestConfig, path: Path) -> set[str]:
    """The event types in ``config.event`` (for ``check_event_weights``)."""
    if config.event is None or not config.event_weights:
        return set()
    return set(as_string_ids(frame, config.event, path).drop_nulls().unique().to_list())


def check_event_weights(present: set[str], config: IngestConfig, source: str) -> None:
    """A weight for an event type the log never holds is a typo or the wrong column: fail,
    listing the types present (a type without a weight counts 1, with a warning)."""
    if config.event is None or not config.event_weights:
        return
    unknown = sorted(set(config.event_weights) - present)
    if unknown:
        shown = ", ".join(map(repr, sorted(present)[:20])) or "none"
        raise DataError(f"{source}: --event-weights names {', '.join(map(repr, unknown))} but "
                        f"column {config.event!r} holds only: {shown}; fix the names or --event")


COLUMN_OPTIONS = ("--context", "--item", "--time", "--event", "--order")  # how messages name them


def frame_events(frame: pl.DataFrame, config: IngestConfig, path: Path, first_row: int,
                 options: tuple[str, ...] = COLUMN_OPTIONS) -> tuple[pl.DataFrame, set[str]]:
    """The named columns of a read table, validated (``event_table``), and the event types it
    holds; errors name ``path``, the columns by ``options`` and rows counted from ``first_row``.
    Shared by files (``file_events``) and in-memory tables (``log_from_frame``)."""
    columns = (config.context, config.item, config.time, config.event, config.order)
    require_columns(frame, dict(zip(options, columns, strict=True)), path)
    used = dict.fromkeys(c for c in columns if c)
    frame = frame.select(list(used)).with_row_index(ROW, offset=first_row)
    return event_table(frame, config, path), event_types(frame, config, path)


def check_no_header_rows(frame: pl.DataFrame, columns: list[str], path: Path | str) -> None:
    """A row whose every named cell is its column's name is a header repeated mid-file (files
    concatenated with ``cat``); read as data it would be an item named 'item_id'."""
    if not columns or any(frame.schema[c] != pl.String for c in columns):
        return
    header = frame.filter(pl.all_horizontal([pl.col(c) == c for c in columns]))
    if header.height:
        raise DataError(f"{path}: row {int(header[ROW][0])} repeats the header "
                        f"({','.join(columns)}; {header.height} such rows); remove them (were "
                        "files joined with their headers?)")


def log_from_frame(frame: pl.DataFrame, config: IngestConfig, path: Path, first_row: int,
                   options: tuple[str, ...] = COLUMN_OPTIONS) -> EventLog:
    """The named columns of a read table -> ``EventLog``; errors name ``path`` and rows counted
    from ``first_row``. Used for in-memory tables (``frames``)."""
    table, types = frame_events(frame, config, path, first_row, options)
    check_event_weights(types, config, str(path))
    if table.height == 0:
        raise DataError(f"{path}: no events left after applying event weights")
    return build_log(table, config, source=str(path))


def event_table(frame: pl.DataFrame, config: IngestConfig, path: Path) -> pl.DataFrame:
    """Validated columns context, item, ROW, weight (and time) of a frame with a ROW index;
    events of weight 0 are dropped. Shared by ``read_events`` and the streaming counter."""
    rows = frame[ROW]
    named = (config.context, config.item, config.time, config.event, config.order)
    check_no_header_rows(frame, list(dict.fromkeys(c for c in named if c in frame.columns)),
                         path)
    context = as_string_ids(frame, config.context, path)
    item = as_string_ids(frame, config.item, path)
    check_not_null(context, config.context, rows, path, "ids")
    check_not_null(item, config.item, rows, path, "ids")
    check_id_length(context, config.context, rows, path)
    check_id_length(item, config.item, rows, path)
    table = pl.DataFrame({"context": context, "item": item, ROW: rows})
    if config.time is not None:
        time_col = frame[config.time]
        check_not_null(time_col, config.time, rows, path)
        table = table.with_columns(pl.Series("time", parse_times(time_col, config.time, rows, path)))
    if config.order is not None:
        table = table.with_columns(pl.Series("order", parse_positions(frame[config.order],
                                                                      config.order, rows, path)))
    table = table.with_columns(pl.Series("weight", _event_weights(frame, config, path)))
    return table.filter(pl.col("weight") > 0)


def parse_positions(values: pl.Series, column: str, rows: pl.Series, path: Path) -> np.ndarray:
    """``--order``: a number per event (its position in the context)."""
    check_not_null(values, column, rows, path)
    numbers = values if values.dtype.is_numeric() else \
        values.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    bad = numbers.is_null()
    if bad.any():
        first = int(bad.arg_true()[0])
        raise DataError(f"{path}: row {int(rows[first])}: column {column!r}: --order needs "
                        f"numbers (positions), got {values[first]!r}")
    return numbers.cast(pl.Float64).to_numpy()


def first_data_row(path: Path, reading: Reading = DEFAULT_READING) -> int:
    """Row numbers in messages match what an editor shows: CSV rows count the header line."""
    return 2 if file_format(path, reading) in ("csv", "recbole") and reading.header else 1


def _event_weights(frame: pl.DataFrame, config: IngestConfig, path: Path) -> np.ndarray:
    if config.event is None:
        return np.ones(frame.height, dtype=np.float32)
    events = as_string_ids(frame, config.event, path).fill_null("")
    if not config.event_weights:
        return np.ones(frame.height, dtype=np.float32)
    unknown = sorted(set(events.unique().to_list()) - set(config.event_weights))
    if unknown:
        logger.warning("%s: event types without a weight count as 1: %s", path,
                       ", ".join(map(repr, unknown[:10])))
    mapping = pl.DataFrame({"e": list(config.event_weights), "w": list(config.event_weights.values())})
    joined = pl.DataFrame({"e": events}).join(mapping, on="e", how="left", maintain_order="left")
    return joined["w"].fill_null(1.0).cast(pl.Float32).to_numpy()


def build_log(table: pl.DataFrame, config: IngestConfig, source: str = "",
              order_given: bool = False) -> EventLog:
    """Columns context, item, weight and optionally time and order (``--order``: position in
    the context) -> an ``EventLog``. Sessions or baskets as ``config.context_kind`` says;
    ``auto`` decides from the order of the events (``itemvec.data.context_kind``), which a time
    or order column gives, or file order where ``order_given`` (sequences handed over as lists
    or written one per line)."""
    has_time, has_order = "time" in table.columns, "order" in table.columns
    table = table.with_columns(pl.col("context").rank("dense").cast(pl.Int64).alias("ctx"))
    sort_by = ["ctx", *(["time"] if has_time else []), *(["order"] if has_order else []), ROW]
    table = table.sort(sort_by)
    if has_order:
        table = table.drop("order")
    if has_time and config.session_gap is not None:
        table = split_sessions(table, config.session_gap)
    # --order breaks ties of a coarse clock (a day): judge the order, not the tied times
    decision = kind_of(table, config, has_time or has_order or order_given, clock=not has_order)
    if decision.chosen_by == "data":
        logger.info("%s: %s", source or "events", decision.describe())
    table = dedupe(table, decision.ordered and config.dedupe_consecutive, decision.ordered)
    return _encode(table, has_time, decision, source)


def kind_of(table: pl.DataFrame, config: IngestConfig, has_order: bool,
            clock: bool = True) -> KindDecision:
    """Sessions or baskets for a table sorted by ``ctx`` then time / file order; ``clock=False``
    judges the sorted order alone (an ``--order`` column breaks the clock's ties)."""
    if config.context_kind != "auto" or not has_order:
        return decide_kind(np.zeros(0, np.int64), np.zeros(0, np.int64), None, config, has_order)
    items = table["item"].rank("dense").cast(pl.Int64).to_numpy()
    times = table["time"].to_numpy().astype(np.float64) \
        if clock and "time" in table.columns else None
    return decide_kind(table["ctx"].to_numpy(), items, times, config, has_order)


def is_ordered(config: IngestConfig, has_time: bool) -> bool:
    """Sessions (order matters) or baskets, where ``context_kind`` is already decided
    (``auto`` is resolved before counting, see ``context_kind``); an unresolved ``auto``
    counts as sessions exactly when the log has a clock."""
    return config.context_kind == "session" or (config.context_kind == "auto" and has_time)


def split_sessions(table: pl.DataFrame, gap: float) -> pl.DataFrame:
    """A new session starts where the time since the previous event exceeds ``gap``."""
    new = (pl.col("time").diff().over("ctx").fill_null(0) > gap).cast(pl.Int64)
    table = table.with_columns(new.cum_sum().over("ctx").alias("part"))
    label = pl.col("context") + pl.lit("#") + pl.col("part").cast(pl.String)
    table = table.with_columns(
        pl.when(pl.col("part").max().over("ctx") > 0).then(label).otherwise(pl.col("context"))
        .alias("context")
    )
    table = table.with_columns(pl.struct("ctx", "part").rank("dense").cast(pl.Int64).alias("ctx"))
    return table.drop("part")


def dedupe(table: pl.DataFrame, consecutive: bool, ordered: bool) -> pl.DataFrame:
    """Sessions: collapse immediate repeats; baskets: one event per (basket, item)."""
    if consecutive:
        same = (pl.col("item") == pl.col("item").shift(1)) & (pl.col("ctx") == pl.col("ctx").shift(1))
        return table.filter(~same.fill_null(False))
    if not ordered:
        aggs = [pl.col("weight").max(), pl.col(ROW).min(), pl.col("context").first()]
        if "time" in table.columns:
            aggs.append(pl.col("time").min())
        return table.group_by(["ctx", "item"], maintain_order=True).agg(aggs).sort(["ctx", ROW])
    return table


def _encode(table: pl.DataFrame, has_time: bool, decision: KindDecision,
            source: str) -> EventLog:
    counts = table.group_by("item").len().sort(["len", "item"], descending=[True, False])
    item_ids = counts["item"].to_numpy().astype(object)
    index = pl.DataFrame({"item": counts["item"], "idx": np.arange(len(counts), dtype=np.int32)})
    table = table.join(index, on="item", how="left", maintain_order="left")
    ctx = table["ctx"].to_numpy()
    boundaries = np.flatnonzero(np.diff(ctx)) + 1
    indptr = np.concatenate([[0], boundaries, [len(ctx)]]).astype(np.int64)
    context_ids = table["context"].to_numpy()[indptr[:-1]].astype(object)
    return EventLog(
        item_ids=item_ids, context_ids=context_ids, indptr=indptr,
        items=table["idx"].to_numpy().astype(np.int32),
        weights=table["weight"].to_numpy().astype(np.float32),
        times=table["time"].to_numpy().astype(np.float64) if has_time else None,
        ordered=decision.ordered, source=source, decision=decision,
    )


def align_items(table: pl.DataFrame, item_ids: np.ndarray) -> pl.DataFrame:
    """Rows of an item table in the order of ``item_ids``: nulls where the table lacks an item,
    the first row where it repeats one. An already aligned table is returned as it is."""
    ids = pl.DataFrame({"item_id": pl.Series([str(i) for i in item_ids], dtype=pl.String)})
    if table.height == ids.height and table["item_id"].cast(pl.String).equals(ids["item_id"]):
        return table
    table = table.with_columns(pl.col("item_id").cast(pl.String))
    return ids.join(table.unique("item_id", keep="first"), on="item_id", how="left",
                    maintain_order="left")


def restrict_vocabulary(log: EventLog, keep: np.ndarray) -> EventLog:
    """Drop items not in ``keep`` (bool mask over the vocabulary) and re-index the rest."""
    new_index = np.full(log.n_items, -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    mapped = new_index[log.items]
    mask = mapped >= 0
    ctx = np.repeat(np.arange(log.n_contexts), log.lengths())[mask]
    counts = np.bincount(ctx, minlength=log.n_contexts)
    indptr = np.zeros(log.n_contexts + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return EventLog(
        item_ids=log.item_ids[keep], context_ids=log.context_ids, indptr=indptr,
        items=mapped[mask].astype(np.int32), weights=log.weights[mask],
        times=None if log.times is None else log.times[mask],
        ordered=log.ordered, source=log.source, decision=log.decision,
    )
