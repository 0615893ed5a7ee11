"""Out-of-core co-occurrence counting: stream an event log in chunks with bounded memory.

``count_file`` gives the same matrix and vocabulary as
``count_pairs(read_events(path, ingest), cooccurrence)`` (the same contexts, time order, session
gaps, de-duplication, event weights, windows, harmonic weights, basket cap, time decay and
min-count pruning) without ever holding the whole log:

- Parquet is read in row batches (pyarrow), CSV/TSV with pyarrow's streaming reader; JSONL is
  read whole (it has no cheap row batches; convert big logs to Parquet).
- A context may span two batches. Logs grouped by context (every context in one contiguous run
  of rows, as most exports and ``itemvec synth`` write them) are streamed in one pass, carrying
  the tail context into the next batch; grouping is verified with 64-bit context hashes. When a
  context re-appears later, counting restarts in *partitioned* mode: rows are first spilled to
  Parquet buckets by hash of context, so every context lies wholly in one bucket.
- A thread reads and prepares the next chunk (polars: parsing, contexts, global item ids) while
  the current one is counted (numpy), so both cores work.
- Pairs of a chunk are summed by sorting 64-bit keys ``lo << 32 | hi`` (upper triangle, global
  first-seen ids) with float64 weights; sorted parts are merged by sorting again, and partial
  sums above ``memory_limit`` are spilled to disk as shards and merged at the end. Only then is
  the vocabulary sorted like ``ingest`` does (most frequent first, then id) and the matrix
  symmetrised to float32 with two linear counting sorts (each pair is stored once, so nothing
  needs duplicate-summing).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from itemvec.config import CooccurrenceConfig, IngestConfig, parse_size
from itemvec.data.batches import (
    DEFAULT_CHUNK_ROWS,
    NotGroupedError,
    bucket_tables,
    grouped_tables,
    in_order,
    partition,
    row_estimate,
)
from itemvec.data.ingest import dedupe, is_ordered, split_sessions
from itemvec.data.streaming import resolve_kind
from itemvec.util.background import background
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT = 4 << 30


@dataclass
class Counts:
    """A co-occurrence matrix with its vocabulary, in ``ingest``'s vocabulary order."""

    item_ids: np.ndarray  # str, most frequent first (ties by id)
    item_counts: np.ndarray  # contexts each item occurs in (as EventLog.item_counts)
    matrix: sp.csr_matrix  # float32, symmetric (unless pruned to top-k), zero diagonal
    stats: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


# -- reading ---------------------------------------------------------------------------------------


# -- one chunk -------------------------------------------------------------------------------------
@dataclass
class _Chunk:
    ctx: np.ndarray  # int64 context index per event, non-decreasing
    items: np.ndarray  # int64 global item id per event
    scale: np.ndarray  # float64 sqrt(event weight * context decay)


@dataclass
class _Events:
    n: int  # vocabulary size once the chunk was encoded
    ctx: np.ndarray
    items: np.ndarray
    scale: np.ndarray  # float64 event weight
    times: np.ndarray | None
    excluded: np.ndarray | None = None  # bool per event: its context is left out (``exclude``)


class _Vocabulary:
    """Item id -> global integer id (new items get the next ids, in first-seen order).

    Ids are looked up by their 64-bit hash (an integer join is several times cheaper than a
    string join), and every row's string is then compared with its id's string, so a hash
    collision cannot merge two items: on one, lookups switch to joining the strings."""

    def __init__(self) -> None:
        self.frame = pl.DataFrame(schema={"key": pl.UInt64, "gid": pl.Int32, "item": pl.String})
        self.by_string = False

    def __len__(self) -> int:
        return self.frame.height

    def encode(self, items: pl.Series) -> np.ndarray:
        """int64 global ids of ``items``."""
        if not self.by_string:
            gid = self._encode(items, _hash_items(items))
            if (self.frame["item"].gather(gid) == items).all():
                return gid.to_numpy().astype(np.int64)
            logger.info("item id hash collision: looking item ids up by string")
            self.by_string = True
        return self._encode(items, items).to_numpy().astype(np.int64)

    def _encode(self, items: pl.Series, keys: pl.Series) -> pl.Series:
        """Ids by ``keys`` (hashes or the strings themselves); unknown keys become new items."""
        known = self.frame.select(pl.col("item" if self.by_string else "key").alias("k"), "gid")
        frame = pl.DataFrame({"k": keys})
        gid = frame.join(known, on="k", how="left", maintain_order="left")["gid"]
        missing = gid.is_null()
        if not missing.any():
            return gid
        fresh = pl.DataFrame({"k": keys.filter(missing), "item": items.filter(missing)})
        new = fresh.unique(subset="k", keep="first", maintain_order=True)
        new = new.with_columns(pl.int_range(len(self), len(self) + new.height,
                                            dtype=pl.Int32).alias("gid"))
        added = new.select(_hash_items(new["item"]).alias("key"), "gid", "item")
        self.frame = pl.concat([self.frame, added])
        ids = fresh.join(new.select("k", "gid"), on="k", how="left", maintain_order="left")["gid"]
        return gid.scatter(missing.arg_true(), ids)


def _hash_items(items: pl.Series) -> pl.Series:
    return items.hash(seed=5)


class Exclusion:
    """Context ids to leave out of the counts (e.g. a held-out validation slice).

    Ids are as ``EventLog.context_ids`` has them (``id#part`` where ``session_gap`` split a
    context). Membership is looked up by sorted 64-bit hashes, once per context of a chunk;
    hash hits are confirmed by comparing the strings, so a collision cannot drop a context."""

    def __init__(self, contexts: pl.Series | np.ndarray | list[str]) -> None:
        labels = pl.Series("context", contexts, dtype=pl.String).unique()
        frame = pl.DataFrame({"h": labels.hash(seed=13), "context": labels}).sort("h")
        self.hashes = frame["h"].to_numpy()
        self.labels = frame["context"]

    def __len__(self) -> int:
        return len(self.labels)

    def contains(self, labels: pl.Series) -> np.ndarray:
        """Bool per label: is it one of the excluded contexts."""
        if len(self.hashes) == 0 or len(labels) == 0:
            return np.zeros(len(labels), bool)
        hashes = labels.hash(seed=13).to_numpy()
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        hit = self.hashes[at] == hashes
        if hit.any():
            same = (self.labels.gather(at[hit]) == labels.filter(pl.Series(hit))).to_numpy()
            if not same.all():  # a collision (or two ids sharing a hash): compare strings
                return labels.is_in(self.labels.implode()).to_numpy()
        return hit

    def flags(self, table: pl.DataFrame) -> np.ndarray:
        """Bool per ``ctx`` value of ``table`` (index = ctx): is that context excluded."""
        ctx = table["ctx"].to_numpy()
        first = np.full(int(ctx.max()) + 1, -1, np.int64)
        first[ctx[::-1]] = np.arange(len(ctx) - 1, -1, -1)  # first row of each context
        present = first >= 0
        out = np.zeros(len(first), bool)
        out[present] = self.contains(table["context"].gather(first[present]))
        return out


def _contexts(table: pl.DataFrame, ingest: IngestConfig, grouped: bool,
              sort: bool = True) -> pl.DataFrame:
    """The steps of ``ingest.build_log`` up to de-duplication, on whole contexts.

    Collapsing immediate repeats (sessions) is left to ``_drop_repeats`` on integer ids, which
    is cheaper than comparing strings and gives the same rows; ``sort=False`` leaves the sort
    into (ctx, time) order to the caller too."""
    has_time = "time" in table.columns
    ordered = is_ordered(ingest, ingest.time is not None)
    ctx = pl.col("context").rle_id() if grouped else pl.col("context").rank("dense")
    table = table.with_columns(ctx.cast(pl.Int64).alias("ctx"))
    if sort and not in_order(table, has_time, grouped):  # file order: a stable sort will do
        table = table.sort(["ctx", "time"] if has_time else ["ctx"], maintain_order=True)
    if has_time and ingest.session_gap is not None:
        table = split_sessions(table, ingest.session_gap)
    return table if ordered else dedupe(table, False, ordered)


def _drop_repeats(ctx: np.ndarray, items: np.ndarray) -> np.ndarray | None:
    """Mask keeping all but immediate repeats of an item in a context (None: nothing to drop)."""
    same = (items[1:] == items[:-1]) & (ctx[1:] == ctx[:-1])
    if not same.any():
        return None
    return np.concatenate([[True], ~same])


_NO_PAIRS = (np.zeros(0, np.int64), np.zeros(0, np.float64))


def chunk_pairs(chunk: _Chunk, ordered: bool,
                config: CooccurrenceConfig) -> tuple[np.ndarray, np.ndarray]:
    """One chunk's upper-triangle pairs, summed: sorted unique keys ``lo << 32 | hi`` and their
    float64 weights (``count_pairs``' loop, unsymmetrised).

    Pairs are aggregated by sorting 64-bit keys (numpy's vectorised sort) instead of building a
    sparse matrix. With unit event scales (no event weights, no decay) a pair's weight depends
    only on its offset, so the offset is packed into the key's low bits and only the keys are
    sorted; otherwise the weights follow an argsort."""
    ctx, items, scale = chunk.ctx, chunk.items, chunk.scale
    if len(ctx) < 2:
        return _NO_PAIRS
    starts = np.flatnonzero(np.concatenate([[True], ctx[1:] != ctx[:-1]]))
    lengths = np.diff(starts, append=len(ctx))
    longest = int(lengths.max())
    offsets = config.window if ordered else config.basket_max_size - 1
    offsets = max(1, min(offsets, longest - 1))  # no pair lies further apart
    # events after each one in its context; int32 halves the memory traffic of the loop below
    rest = (np.repeat(starts + lengths - 1, lengths) - np.arange(len(ctx))).astype(np.int32)
    harmonic = ordered and config.distance_weighting == "harmonic"
    bits = max(1, int(items.max()).bit_length())
    offset_bits = (offsets - 1).bit_length()
    packed = 2 * bits + offset_bits <= 62 and bool(np.all(scale == 1.0))
    items = items.astype(np.int32)  # global ids are int32
    keys, weights = [], []
    left = None  # positions with a partner at this offset, once they are few
    for offset in range(1, offsets + 1):
        if left is None:  # many: contiguous slices, vectorised without gathers
            keep = rest[:-offset] >= offset
            if np.count_nonzero(keep) < len(ctx) // 4:
                left = np.flatnonzero(keep)
        else:
            left = left[rest[left] >= offset]
        if left is None:
            a, b = items[:-offset], items[offset:]
            keep &= a != b
            sa, sb = scale[:-offset], scale[offset:]
        else:
            a, b = items[left], items[left + offset]
            keep = a != b
            sa, sb = (None, None) if packed else (scale[left], scale[left + offset])
        key = np.minimum(a, b)[keep].astype(np.int64)
        key <<= bits if packed else 32  # in place: these arrays are the size of the chunk
        key |= np.maximum(a, b)[keep]
        if packed:
            key <<= offset_bits
            key |= offset - 1
            keys.append(key)
            continue
        keys.append(key)
        weight = sa[keep] * sb[keep]
        weights.append(weight / offset if harmonic else weight)
    keys = np.concatenate(keys) if keys else _NO_PAIRS[0]
    if len(keys) == 0:  # e.g. only one-event contexts, or only repeats of one item
        return _NO_PAIRS
    if not packed:
        order = np.argsort(keys)
        return _sum_sorted(keys[order], np.concatenate(weights)[order])
    keys.sort()
    pairs = keys >> offset_bits
    first = _run_starts(pairs)
    if harmonic:  # 1 / offset, as count_pairs divides the unit weight by it
        keys &= (1 << offset_bits) - 1  # in place (big arrays): offset - 1
        keys += 1
        weight = np.add.reduceat(1.0 / keys, first)
    else:  # a sum of ones: the run's length
        weight = np.diff(first, append=len(keys)).astype(np.float64)
    del keys
    pairs = pairs[first]
    keys = pairs >> bits
    keys <<= 32
    pairs &= (1 << bits) - 1
    keys |= pairs
    return keys, weight


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal values in a sorted array starts."""
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))


def _sum_sorted(keys: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(keys) == 0:
        return _NO_PAIRS
    first = _run_starts(keys)
    return keys[first], np.add.reduceat(weights, first)


# -- accumulation ----------------------------------------------------------------------------------
class PairAccumulator:
    """Sums sorted (key, weight) parts of pairs into one sorted part, spilling when big.

    Parts are buffered and merged (one sort of their concatenation) in large batches; when the
    running sum outgrows its share of ``memory_limit`` it is written to ``workdir`` as an
    uncompressed shard and restarted. Keys and weights cost 16 bytes per pair.
    """

    def __init__(self, memory_limit: int, workdir: Path) -> None:
        self.memory_limit = memory_limit
        self.workdir = workdir
        self.buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.total: tuple[np.ndarray, np.ndarray] | None = None
        self.shards: list[Path] = []
        self.buffer_limit = max(1 << 12, memory_limit // 4 // 16)
        self.matrix_limit = max(1 << 16, memory_limit // 3)

    def add(self, keys: np.ndarray, weights: np.ndarray) -> None:
        if len(keys):
            self.buffer.append((keys, weights))
            self.buffered += len(keys)
        if self.buffered >= self.buffer_limit:
            self.fold()

    def fold(self) -> None:
        parts = self.buffer + ([self.total] if self.total is not None else [])
        self.buffer, self.buffered = [], 0
        self.total = _merge(parts) if parts else None
        if self.total is not None and 16 * len(self.total[0]) > self.matrix_limit:
            self.spill()

    def spill(self) -> None:
        shard = self.workdir / f"shard-{len(self.shards):04d}.npz"
        keys, weights = self.total
        np.savez(shard, keys=keys, weights=weights)
        logger.info("spilled %d pairs (%.0f MB) to %s", len(keys), 16 * len(keys) / 1e6, shard)
        self.shards.append(shard)
        self.total = None

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted unique keys ``lo << 32 | hi`` and float64 sums over everything added."""
        self.fold()
        total = self.total if self.total is not None else _NO_PAIRS
        for shard in self.shards:
            with np.load(shard, allow_pickle=False) as saved:
                total = _merge([total, (saved["keys"], saved["weights"])])
            shard.unlink()
        return total


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum sorted (keys, weights) parts into one; big merges split the key range over threads
    (numpy's sort and gathers release the GIL)."""
    parts = [part for part in parts if len(part[0])] or [_NO_PAIRS]
    if len(parts) == 1:
        return parts[0]
    pieces = _pieces(sum(len(k) for k, _ in parts))
    if pieces == 1:
        return _merge_one(parts)
    largest = max((k for k, _ in parts), key=len)
    pivots = largest[[len(largest) * i // pieces for i in range(1, pieces)]]
    bounds = [np.concatenate([[0], np.searchsorted(k, pivots), [len(k)]]) for k, _ in parts]
    jobs = [[(k[b[i]:b[i + 1]], w[b[i]:b[i + 1]]) for (k, w), b in zip(parts, bounds, strict=True)]
            for i in range(pieces)]
    merged = _in_threads(_merge_one, jobs)
    return (np.concatenate([k for k, _ in merged]), np.concatenate([w for _, w in merged]))


def _merge_one(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _ in parts])
    order = np.argsort(keys)
    return _sum_sorted(keys[order], np.concatenate([w for _, w in parts])[order])


_PARALLEL_MIN = 1 << 20  # smaller jobs are not worth a thread


def _pieces(size: int) -> int:
    return max(1, min(os.cpu_count() or 1, 4)) if size >= _PARALLEL_MIN else 1


def _in_threads(function, jobs: list) -> list:
    """``[function(job) for job in jobs]``, one thread each."""
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="itemvec-count") as pool:
        return list(pool.map(function, jobs))


# -- the counter -----------------------------------------------------------------------------------
class StreamCounter:
    """One pass over the chunks of a log: vocabulary, item counts and pair sums."""

    def __init__(self, ingest: IngestConfig, config: CooccurrenceConfig, memory_limit: int,
                 workdir: Path, keep: np.ndarray | None = None,
                 newest: float | None = None, pairs: bool = True,
                 exclude: Exclusion | None = None) -> None:
        self.ingest, self.config = ingest, config
        self.ordered = is_ordered(ingest, ingest.time is not None)
        self.vocabulary = _Vocabulary()
        self.keep = keep  # min-count mask over global ids (second pass)
        self.newest = newest  # newest context end, for the time decay
        self.pairs = pairs
        self.exclude = exclude  # contexts counted in the vocabulary order only
        self.excluded_contexts = 0
        self.accumulator = PairAccumulator(memory_limit, workdir)
        self.event_counts = np.zeros(0, np.int64)
        self.context_counts = np.zeros(0, np.int64)
        self.item_latest = np.zeros(0, np.float64)  # newest time per item (time decay)
        self.events = self.contexts = 0

    def add(self, table: pl.DataFrame, grouped: bool) -> None:
        prepared = self.prepare(table, grouped)
        if prepared is not None:
            self.count(prepared)

    def prepare(self, table: pl.DataFrame, grouped: bool) -> _Events | None:
        """Contexts, order, sessions, global ids and de-duplication (the reading thread's part:
        chunks must be prepared in file order, since new items get the next ids)."""
        if table.height == 0:
            return None
        # sessions without gaps to split: sort ids and numbers, not the string columns
        late = self.ordered and self.ingest.session_gap is None
        table = _contexts(table, self.ingest, grouped, sort=not late)
        items = self.vocabulary.encode(table["item"])
        ctx = table["ctx"].to_numpy().astype(np.int64)
        scale = table["weight"].to_numpy().astype(np.float64)  # weight now, its sqrt below
        times = table["time"].to_numpy() if "time" in table.columns else None
        if late and not in_order(table, times is not None, grouped):
            by = ["ctx", "time"] if times is not None else ["ctx"]
            order = table.select(pl.arg_sort_by(by, maintain_order=True)).to_series().to_numpy()
            ctx, items, scale = ctx[order], items[order], scale[order]
            times = None if times is None else times[order]
        if self.ordered and self.ingest.dedupe_consecutive:  # as ingest.dedupe
            mask = _drop_repeats(ctx, items)
            if mask is not None:
                ctx, items, scale = ctx[mask], items[mask], scale[mask]
                times = None if times is None else times[mask]
        excluded = None if self.exclude is None else self.exclude.flags(table)[ctx]
        return _Events(len(self.vocabulary), ctx, items, scale, times, excluded)

    def count(self, events: _Events) -> None:
        """Item counts and pair sums of prepared chunks, taken in file order."""
        n, ctx, items, scale, times = (events.n, events.ctx, events.items, events.scale,
                                       events.times)
        self.event_counts = _grow(self.event_counts, n)
        self.event_counts += np.bincount(items, minlength=n)
        self.context_counts = _grow(self.context_counts, n)
        if events.excluded is not None:  # left-out contexts only order the vocabulary
            self.excluded_contexts += _n_contexts(ctx[events.excluded])
            ctx, items, scale, times = _drop_excluded(ctx, items, scale, times, events.excluded)
            if len(ctx) == 0:
                return
        if times is not None and not self.pairs:  # pre-pass: newest time per item
            self.item_latest = _grow(self.item_latest, n, -np.inf)
            np.maximum.at(self.item_latest, items, times)
        if self.keep is not None:  # min-count pruning happens after de-duplication
            mask = self.keep[items]
            ctx, items, scale = ctx[mask], items[mask], scale[mask]
            times = None if times is None else times[mask]
            if len(ctx) == 0:
                return
        if times is not None and self.newest is not None:
            last = np.flatnonzero(np.diff(ctx, append=ctx[-1] + 1))
            age = self.newest - times[last]
            decay = np.power(0.5, age / self.config.time_decay_half_life)
            scale = scale * np.repeat(decay, np.diff(last, prepend=-1))
        # a pair weighs sqrt(w_a w_b) * decay: each event carries sqrt(weight * decay)
        chunk = _Chunk(ctx, items, np.sqrt(scale))
        self.events += len(items)
        self.contexts += 1 + int(np.count_nonzero(np.diff(ctx)))
        self.context_counts += _contexts_per_item(chunk, n)
        if self.pairs:
            self.accumulator.add(*chunk_pairs(chunk, self.ordered, self.config))


def _n_contexts(ctx: np.ndarray) -> int:
    """Contexts among events sorted by context."""
    return 0 if len(ctx) == 0 else 1 + int(np.count_nonzero(np.diff(ctx)))


def _drop_excluded(ctx, items, scale, times, excluded: np.ndarray):
    keep = ~excluded
    return ctx[keep], items[keep], scale[keep], None if times is None else times[keep]


def _grow(counts: np.ndarray, n: int, fill: float = 0) -> np.ndarray:
    if len(counts) >= n:
        return counts
    return np.concatenate([counts, np.full(n - len(counts), fill, dtype=counts.dtype)])


def _contexts_per_item(chunk: _Chunk, n: int) -> np.ndarray:
    """Distinct contexts per item: unique (ctx, item) keys, sorted in one int64 column."""
    if len(chunk.items) == 0:
        return np.zeros(n, np.int64)
    keys = np.sort((chunk.ctx - chunk.ctx[0]) * n + chunk.items)
    keys = keys[_run_starts(keys)]
    return np.bincount(keys % n, minlength=n)


def _grouped_pass(path: Path, counter: StreamCounter, chunk_rows: int, progress) -> None:
    for events in background(_grouped_chunks(path, counter, chunk_rows, progress)):
        counter.count(events)


def _grouped_chunks(path: Path, counter: StreamCounter, chunk_rows: int,
                    progress) -> Iterator[_Events]:
    for table in grouped_tables(path, counter.ingest, chunk_rows, progress):
        events = counter.prepare(table, grouped=True)
        if events is not None:
            yield events


def _partitioned_pass(buckets: list[Path], counter: StreamCounter, progress) -> None:
    for events in background(_bucket_chunks(buckets, counter, progress)):
        counter.count(events)


def _bucket_chunks(buckets: list[Path], counter: StreamCounter, progress) -> Iterator[_Events]:
    for table in bucket_tables(buckets, counter.ingest, progress):
        events = counter.prepare(table, grouped=False)
        if events is not None:
            yield events


def _run_pass(path: Path, counter_args: dict, chunk_rows: int, grouped: bool | None,
              state: dict, progress: bool, label: str) -> StreamCounter:
    """One pass (grouped streaming when allowed, else over hash buckets)."""
    total = row_estimate(path)
    if grouped is not False and not state.get("buckets"):
        counter = StreamCounter(**counter_args)
        bar = tqdm(total=total, desc=label, unit="ev", unit_scale=True, disable=not progress)
        try:
            _grouped_pass(path, counter, chunk_rows, bar)
            state["mode"] = "grouped"
            return counter
        except NotGroupedError:
            if grouped:
                raise DataError(f"{path}: rows of one {counter.ingest.context!r} are not "
                                "contiguous; drop --grouped to count it anyway") from None
            logger.info("%s is not grouped by context; partitioning it by hash", path)
        finally:
            bar.close()
    if not state.get("buckets"):
        state["buckets"] = partition(path, counter_args["ingest"], chunk_rows,
                                     Path(state["workdir"]), progress)
    state["mode"] = "partitioned"
    counter = StreamCounter(**counter_args)
    with tqdm(total=total, desc=label, unit="ev", unit_scale=True, disable=not progress) as bar:
        _partitioned_pass(state["buckets"], counter, bar)
    return counter


def count_file(path: str | Path, ingest: IngestConfig, config: CooccurrenceConfig | None = None,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, memory_limit: int | str | None = None,
               top_k: int | None = None, grouped: bool | None = None,
               workdir: str | Path | None = None, progress: bool = True,
               exclude: pl.Series | np.ndarray | list[str] | None = None) -> Counts:
    """Count ``path`` chunk by chunk; equal to ``count_pairs(read_events(path, ingest), config)``.

    ``grouped``: None detects (falls back to hash partitioning), True requires, False always
    partitions. ``memory_limit`` bounds the partial sums held in memory (spilled beyond it).

    ``exclude`` (context ids, as ``EventLog.context_ids``) leaves those contexts out, as
    ``pipeline.train_on_log`` does with its held-out slice: the result equals ``count_pairs`` of
    ``restrict_vocabulary(rest, prune_rare_items(rest, min_count))`` with ``rest`` the log's
    other contexts (``log.subset``). So the vocabulary keeps the whole log's order (left-out
    events still count towards it), and items seen only in left-out contexts are dropped.
    """
    path = Path(path)
    config = config or CooccurrenceConfig()
    limit = parse_size(memory_limit) or DEFAULT_MEMORY_LIMIT
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    if config.min_support > 1:
        raise ConfigError("cooccurrence.min_support is not supported by the streaming counter; "
                          "apply it when training (itemvec train --min-support)")
    started = time.perf_counter()
    ingest, decision = resolve_kind(path, ingest, chunk_rows)
    scratch = Path(tempfile.mkdtemp(prefix="itemvec-count-", dir=workdir))
    state: dict = {"workdir": scratch}
    try:
        args = dict(ingest=ingest, config=config, memory_limit=limit, workdir=scratch,
                    exclude=None if exclude is None else Exclusion(exclude))
        prepass = config.min_count > 1 or (config.time_decay_half_life is not None
                                           and ingest.time is not None)
        first = None
        if prepass:  # counts / newest time first, exactly as read_events sees them
            first = _run_pass(path, {**args, "pairs": False}, chunk_rows, grouped, state,
                              progress, "pre-pass")
            if config.min_count > 1:
                args["keep"] = _grow(first.context_counts, len(first.vocabulary)) >= \
                    config.min_count
            if config.time_decay_half_life is not None and ingest.time is not None:
                latest = _grow(first.item_latest, len(first.vocabulary), -np.inf)
                kept = latest[args["keep"]] if "keep" in args else latest
                args["newest"] = float(kept.max(initial=-np.inf))
        counter = _run_pass(path, args, chunk_rows, grouped, state, progress, "counting")
        if first is not None and config.min_count > 1:
            _check_same_vocabulary(first, counter)
        counts = _finish(counter, top_k)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    counts.stats.update({"source": str(path), "mode": state.get("mode"), "seconds": round(seconds, 3),
                         "events_per_second": round(counter.events / max(seconds, 1e-9)),
                         "spilled_shards": len(counter.accumulator.shards), "top_k": top_k,
                         **({} if exclude is None else
                            {"excluded_contexts": counter.excluded_contexts}),
                         "chunk_rows": chunk_rows, "memory_limit": limit,
                         "context_kind_decision": decision.to_dict()})
    logger.info("counted %d events in %.1fs (%.0f events/s, %s)", counter.events, seconds,
                counts.stats["events_per_second"], state.get("mode"))
    return counts


def _check_same_vocabulary(first: StreamCounter, second: StreamCounter) -> None:
    if len(first.vocabulary) != len(second.vocabulary):
        raise DataError("the log changed between the two counting passes")


def _finish(counter: StreamCounter, top_k: int | None) -> Counts:
    """Sort the vocabulary like ``ingest`` does, drop pruned items and symmetrise."""
    n = len(counter.vocabulary)
    keys, weights = counter.accumulator.result()
    events = _grow(counter.event_counts, n)
    vocab = counter.vocabulary.frame.with_columns(pl.Series("len", events[:n]))
    vocab = vocab.sort(["len", "item"], descending=[True, False])
    order = vocab["gid"].to_numpy()
    if counter.keep is not None:
        order = order[counter.keep[order]]
    elif counter.exclude is not None:  # items seen only in left-out contexts
        order = order[_grow(counter.context_counts, n)[order] > 0]
    index = np.int32 if n < np.iinfo(np.int32).max else np.int64  # what scipy will use
    position = np.full(n, -1, index)
    position[order] = np.arange(len(order), dtype=index)
    rows, cols = position[keys >> 32], position[keys & 0xFFFFFFFF]
    del keys
    matrix = _symmetric(rows, cols, weights.astype(np.float32), len(order))
    del rows, cols, weights
    matrix.eliminate_zeros()
    if top_k is not None:
        matrix = top_k_partners(matrix, top_k)
    item_ids = counter.vocabulary.frame["item"].to_numpy()[order].astype(object)
    stats = {"events": counter.events, "contexts": counter.contexts, "items": len(order),
             "nonzeros": int(matrix.nnz),
             "context_kind": "session" if counter.ordered else "basket"}
    return Counts(item_ids, _grow(counter.context_counts, n)[order], matrix, stats)


def _symmetric(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, m: int) -> sp.csr_matrix:
    """CSR (sorted indices) of the symmetric matrix holding ``data`` at (rows, cols), cols, rows.

    Every unordered pair is given once and off the diagonal, so no entry repeats: no duplicate
    summing is needed, and two linear counting sorts replace sorting each row. Blocks of rows
    with about equal numbers of entries are built in parallel threads (scipy's sparsetools
    release the GIL) and stacked."""
    if len(rows) == 0:
        return sp.csr_matrix((m, m), dtype=np.float32)
    pieces = _pieces(2 * len(rows))
    if pieces == 1:
        blocks = [_row_block((rows, cols, data, 0, m, m))]
    else:
        per_row = np.cumsum(np.bincount(rows, minlength=m) + np.bincount(cols, minlength=m))
        cuts = np.searchsorted(per_row, [per_row[-1] * i / pieces for i in range(1, pieces)])
        edges = [0, *sorted({int(c) for c in cuts}), m]
        blocks = _in_threads(_row_block, [(rows, cols, data, a, b, m)
                                          for a, b in zip(edges[:-1], edges[1:], strict=True)])
    total = sum(len(indices) for _, indices, _ in blocks)
    index = np.int64 if max(total, m) > np.iinfo(np.int32).max else np.int32
    indptr, start = [np.zeros(1, index)], 0
    for block_ptr, _, _ in blocks:
        indptr.append(block_ptr[1:].astype(index) + start)
        start += int(block_ptr[-1])
    matrix = sp.csr_matrix((np.concatenate([d for _, _, d in blocks]),
                            np.concatenate([i for _, i, _ in blocks]).astype(index, copy=False),
                            np.concatenate(indptr)), shape=(m, m))
    matrix.has_sorted_indices = True
    return matrix


def _row_block(job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of rows a..b: entries grouped by column (COO -> CSR keyed by
    column), then by row in column order (CSR -> CSC, which scipy emits with sorted indices)."""
    rows, cols, data, a, b, m = job
    if a == 0 and b == m:
        upper, lower = slice(None), slice(None)
    else:
        upper, lower = (rows >= a) & (rows < b), (cols >= a) & (cols < b)
    minor = np.concatenate([rows[upper], cols[lower]])
    if a:
        minor -= a
    block = sp.coo_matrix((np.concatenate([data[upper], data[lower]]),
                           (np.concatenate([cols[upper], rows[lower]]), minor)), shape=(m, b - a))
    block.has_canonical_format = True  # entries are unique: tocsr must not sort to sum them
    by_row = block.tocsr().tocsc()
    return by_row.indptr, by_row.indices, by_row.data


def top_k_partners(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's ``k`` largest entries (ties: lower column first); rows stay sorted."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    counts = np.diff(matrix.indptr)
    if counts.max(initial=0) <= k:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    rank = np.arange(matrix.nnz) - matrix.indptr[rows]
    keep = order[rank < k]
    keep.sort()
    pruned = sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])),
                           shape=matrix.shape, dtype=matrix.dtype)
    pruned.sort_indices()
    return pruned
