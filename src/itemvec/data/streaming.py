"""Training data from logs too big for memory: hold out, count and validate in passes over a file.

``pipeline.train`` on a big Parquet/CSV log does, instead of ``read_events``:

1. ``hold_out``: a pass that keeps one row per context (id, session part, time of its last event)
   and picks the validation contexts exactly as ``pipeline.holdout_by_time`` does on the whole
   log (contexts in ``read_events`` order, the newest ``fraction`` by last event with the same
   seeded tie-break; a seeded random choice without a clock). Contexts are formed as ingest
   forms them: zero-weight events dropped, session gaps split, repeats collapsed (the last event
   time is taken after that, as ``EventLog.context_end_times`` sees it).
2. ``counting.count_file(..., exclude=held-out ids)``: the training matrix, vocabulary and counts.
3. ``read_contexts``: a seeded sample of the held-out contexts (enough for the validation
   queries) read with a filter into a small ``EventLog``, for early stopping and query tuning.

Memory: besides one chunk, the pre-pass holds one row per context (16.7M synthetic contexts
and their sort: ~1.1 GB peak); the counter is bounded by its ``memory_limit``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from itemvec.config import IngestConfig
from itemvec.data.batches import (
    DEFAULT_CHUNK_ROWS,
    NotGroupedError,
    bucket_tables,
    event_columns,
    grouped_tables,
    in_order,
    iter_batches,
    partition,
    row_estimate,
)
from itemvec.data.context_kind import MAX_EVENTS, KindDecision, explicit
from itemvec.data.ingest import (
    ROW,
    EventLog,
    Reading,
    as_string_ids,
    build_log,
    event_table,
    file_format,
    first_data_row,
    is_ordered,
)
from itemvec.data.sources import compression
from itemvec.util.background import background
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

STREAMING_ROWS = 20_000_000  # --streaming auto: Parquet/CSV logs above this many rows stream
VALIDATION_CONTEXTS = 20_000  # held-out contexts read back: ample for 3000 validation queries
MODES = ("auto", "on", "off")


def resolve_kind(path: str | Path, ingest: IngestConfig,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[IngestConfig, KindDecision]:
    """``ingest`` with ``context_kind`` decided, and why: passes over a file need the kind
    before they start, so ``auto`` is judged on the file's first ``MAX_EVENTS`` rows (read as
    ``read_events`` reads them; a context cut at the end of the sample only loses pairs)."""
    if ingest.context_kind != "auto":
        return ingest, explicit(ingest.context_kind)
    path = Path(path)
    frames, offset, rows = [], first_data_row(path), 0
    for frame in iter_batches(path, event_columns(ingest), min(chunk_rows, MAX_EVENTS)):
        frames.append(frame.with_row_index(ROW, offset=offset))
        offset, rows = offset + frame.height, rows + frame.height
        if rows >= MAX_EVENTS:
            break
    table = event_table(pl.concat(frames, how="vertical_relaxed"), ingest, path)
    decision = build_log(table, ingest, source=str(path)).decision
    evidence = {**decision.evidence, "rows_read": rows}
    decision = KindDecision(decision.kind, decision.chosen_by, decision.reason, evidence)
    return ingest.replace(context_kind=decision.kind), decision


def use_streaming(path: str | Path | list, mode: str = "auto", threshold: int = STREAMING_ROWS,
                  ingest: IngestConfig | None = None) -> bool:
    """Whether ``itemvec train`` streams ``path``: ``auto`` streams Parquet/CSV logs of more than
    ``threshold`` rows (estimated from Parquet metadata or the first MB of a CSV); JSONL never.
    Only one plain file with a header streams (``not_streamable``); ``on`` fails otherwise."""
    if mode not in MODES:
        raise ConfigError(f"--streaming must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return False
    reason = not_streamable(path, ingest or IngestConfig())
    if reason:
        if mode == "on":
            raise ConfigError(f"--streaming on reads one CSV or Parquet file with a header; "
                              f"{reason}. Convert the log to one Parquet file or use "
                              "--streaming off")
        return False
    path = Path(path)
    kind = file_format(path)
    if mode == "on":
        if kind == "jsonl":
            raise ConfigError(f"{path}: --streaming on reads Parquet or CSV, not JSONL; convert "
                              "the log to Parquet or use --streaming off")
        return True
    if kind == "jsonl" or not path.is_file() or path.stat().st_size == 0:
        return False
    return row_estimate(path) > threshold


def not_streamable(path: str | Path | list, ingest: IngestConfig) -> str:
    """Why the streamed reader cannot take this input ('' when it can): it reads one CSV or
    Parquet file with a header, in file or time order."""
    if not isinstance(path, str | Path):
        return f"got {len(path)} inputs"
    if Path(path).is_dir() or any(c in str(path) for c in "*?[") and not Path(path).exists():
        return f"{path} is a directory or a pattern"
    if compression(Path(path)):
        return f"{path} is compressed"
    reading = Reading.of(ingest)
    if not reading.is_default:
        return "the file needs --format/--sep/--no-header/--columns/--encoding"
    if ingest.order is not None:
        return "--order sorts events in memory"
    return ""


@dataclass
class Holdout:
    """The held-out contexts of a log, as ``holdout_by_time`` would pick them."""

    n_contexts: int  # contexts in the whole log
    valid: pl.DataFrame  # label (EventLog.context_ids), context (id in the file); log order
    by_time: bool
    grouped: bool  # the file is grouped by context (counting can stream it in one pass)

    @property
    def n_train(self) -> int:
        return self.n_contexts - self.valid.height


def hold_out(path: str | Path, ingest: IngestConfig, fraction: float, seed: int,
             chunk_rows: int = DEFAULT_CHUNK_ROWS, workdir: str | Path | None = None,
             progress: bool = True) -> Holdout:
    """Pick the newest ``fraction`` of contexts, as ``holdout_by_time(read_events(path))``."""
    path = Path(path)
    ends, grouped = context_ends(path, ingest, chunk_rows, workdir, progress)
    if ends.height == 0:
        raise DataError(f"{path}: no events left after applying event weights")
    ends = ends.sort(["context", "part"])  # read_events' context order (id, then session part)
    n = ends.height
    by_time = ingest.time is not None
    empty = pl.DataFrame(schema={"label": pl.String, "context": pl.String})
    if fraction <= 0 or n < 20:
        return Holdout(n, empty, by_time, grouped)
    rng = np.random.default_rng(seed)  # evaluation.split_contexts, valid=0, test=fraction
    if by_time:
        tiebreak = rng.random(n)  # np.lexsort((tiebreak, end)) in two stable argsorts (faster)
        order = np.argsort(tiebreak, kind="stable")
        order = order[np.argsort(ends["end"].to_numpy()[order], kind="stable")]
    else:
        order = rng.permutation(n)
    chosen = np.sort(order[n - int(round(fraction * n)):])
    valid = ends[chosen].select(
        pl.when(pl.col("multi"))
        .then(pl.col("context") + pl.lit("#") + pl.col("part").cast(pl.String))
        .otherwise(pl.col("context")).alias("label"), "context")
    return Holdout(n, valid, by_time, grouped)


def context_ends(path: Path, ingest: IngestConfig, chunk_rows: int,
                 workdir: str | Path | None = None,
                 progress: bool = True) -> tuple[pl.DataFrame, bool]:
    """One row per context: context, part, multi, end; and whether the file is grouped."""
    total = row_estimate(path)
    with tqdm(total=total, desc="holdout pass", unit="ev", unit_scale=True,
              disable=not progress) as bar:
        try:
            tables = grouped_tables(path, ingest, chunk_rows, bar)
            parts = [_context_ends(t, ingest, True) for t in background(tables)]
            return _concat(parts), True
        except NotGroupedError:
            logger.info("%s is not grouped by context; partitioning it by hash", path)
    scratch = Path(tempfile.mkdtemp(prefix="itemvec-holdout-", dir=workdir))
    try:
        buckets = partition(path, ingest, chunk_rows, scratch, progress)
        with tqdm(total=total, desc="holdout pass", unit="ev", unit_scale=True,
                  disable=not progress) as bar:
            tables = bucket_tables(buckets, ingest, bar, str(path))
            parts = [_context_ends(t, ingest, False) for t in background(tables)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _concat(parts), False


_ENDS = {"context": pl.String, "part": pl.Int64, "multi": pl.Boolean, "end": pl.Float64}


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(parts) if parts else pl.DataFrame(schema=_ENDS)


def _context_ends(table: pl.DataFrame, ingest: IngestConfig, grouped: bool) -> pl.DataFrame:
    """The contexts of a table of whole contexts, as ``ingest.build_log`` forms them.

    ``part`` numbers the sessions a ``session_gap`` splits a context into and ``multi`` says
    whether there are several (``build_log`` then names them ``id#part``); ``end`` is the time
    of the last event after repeats are collapsed (null without a clock)."""
    if "time" not in table.columns:
        return table.select(pl.col("context").unique(maintain_order=True)).with_columns(
            pl.lit(0, pl.Int64).alias("part"), pl.lit(False).alias("multi"),
            pl.lit(None, pl.Float64).alias("end"))
    ctx = pl.col("context").rle_id() if grouped else pl.col("context").rank("dense")
    table = table.select("context", "item", "time", ROW, ctx.cast(pl.Int64).alias("ctx"))
    if not in_order(table, True, grouped):
        table = table.sort(["ctx", "time", ROW])
    part = pl.lit(0, pl.Int64)
    if ingest.session_gap is not None:  # as ingest.split_sessions
        new = (pl.col("time").diff().over("ctx").fill_null(0) > ingest.session_gap)
        part = new.cast(pl.Int64).cum_sum().over("ctx")
    table = table.with_columns(part.alias("part"))
    if is_ordered(ingest, ingest.time is not None):
        if ingest.dedupe_consecutive:  # as ingest.dedupe: a repeat is not the last event
            same = ((pl.col("item") == pl.col("item").shift(1))
                    & (pl.col("ctx") == pl.col("ctx").shift(1))
                    & (pl.col("part") == pl.col("part").shift(1)))
            table = table.filter(~same.fill_null(False))
    else:  # baskets keep each item's first time
        table = table.group_by(["ctx", "part", "item"]).agg(
            pl.col("time").min(), pl.col("context").first())
    ends = table.group_by(["ctx", "part"]).agg(pl.col("context").first(),
                                               pl.col("time").max().alias("end"))
    return ends.select("context", "part", (pl.col("part").max().over("ctx") > 0).alias("multi"),
                       "end")


def sample_valid(holdout: Holdout, limit: int = VALIDATION_CONTEXTS, seed: int = 0) -> pl.DataFrame:
    """At most ``limit`` held-out contexts (seeded; all of them when there are fewer)."""
    if holdout.valid.height <= limit:
        return holdout.valid
    rng = np.random.default_rng(seed)
    return holdout.valid[np.sort(rng.choice(holdout.valid.height, size=limit, replace=False))]


def read_contexts(path: str | Path, ingest: IngestConfig, contexts: pl.DataFrame,
                  chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  progress: bool = True) -> EventLog | None:
    """The contexts ``contexts`` (label, context) of ``path`` as an ``EventLog`` (None if none).

    Rows are read chunk by chunk and filtered on the context id, so only those contexts are
    ever held; session parts not asked for are dropped after ``build_log`` splits them."""
    if contexts.height == 0:
        return None
    path = Path(path)
    wanted = contexts["context"].unique().implode()
    frames, offset = [], first_data_row(path)
    with tqdm(total=row_estimate(path), desc="validation slice", unit="ev",
              unit_scale=True, disable=not progress) as bar:
        for frame in iter_batches(path, event_columns(ingest), chunk_rows):
            frame = frame.with_row_index(ROW, offset=offset)
            offset += frame.height
            bar.update(frame.height)
            found = frame.filter(as_string_ids(frame, ingest.context, path).is_in(wanted))
            if found.height:
                frames.append(found)
    if not frames:
        return None
    table = event_table(pl.concat(frames, how="vertical_relaxed"), ingest, path)
    log = build_log(table, ingest, source=str(path))
    labels = pl.Series(log.context_ids.tolist(), dtype=pl.String)
    keep = labels.is_in(contexts["label"].implode()).to_numpy()
    return log.subset(np.flatnonzero(keep)) if keep.any() else None
