"""Full-ranking evaluation on held-out contexts: HR@k, NDCG@k, MRR@k for i2i and s2i.

Protocol: contexts are split by the time of their last event (seeded random without a clock).
For sessions every next event is a query: ``s2i`` ranks all items given the history so far,
``i2i`` given only the last item. For baskets one item is left out: ``s2i`` uses the rest of the
basket, ``i2i`` one other random item. Targets already in the query are skipped, history items
are excluded from the ranking, and every training item is ranked (never sampled negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from itemvec.data.ingest import EventLog

TASKS = ("i2i", "s2i")
# popularity strata by rank share of the catalogue: head to tail
STRATA = ((0.0, 0.01, "top 1%"), (0.01, 0.05, "1-5%"), (0.05, 0.2, "5-20%"),
          (0.2, 0.5, "20-50%"), (0.5, 1.0, "bottom 50%"))


class Scorer(Protocol):
    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray: ...


@dataclass
class Split:
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    by_time: bool


def split_contexts(log: EventLog, valid: float = 0.1, test: float = 0.1,
                   seed: int = 0) -> Split:
    """Order contexts by the time of their last event (random without a clock) and cut."""
    ends = log.context_end_times()
    rng = np.random.default_rng(seed)
    if ends is None:
        order = rng.permutation(log.n_contexts)
    else:
        tiebreak = rng.random(log.n_contexts)
        order = np.lexsort((tiebreak, ends))
    n_test = int(round(test * log.n_contexts))
    n_valid = int(round(valid * log.n_contexts))
    n_train = log.n_contexts - n_test - n_valid
    return Split(order[:n_train], order[n_train:n_train + n_valid],
                 order[n_train + n_valid:], by_time=ends is not None)


@dataclass
class Queries:
    histories: list[np.ndarray]  # model-vocabulary indices, oldest first
    targets: np.ndarray  # model-vocabulary index of the held-out item
    skipped_unknown: int = 0

    def __len__(self) -> int:
        return len(self.targets)


def build_queries(log: EventLog, to_model: np.ndarray, task: str, seed: int = 0,
                  max_queries: int | None = None) -> Queries:
    """Queries from the contexts of ``log``; ``to_model`` maps log item -> model index or -1.

    Sessions: every position t >= 1 is a query (history: the known items before t; target:
    item t), skipped when the target is unknown to the model, the history is empty or (s2i)
    the target is already in it / (i2i) equals the last item. Baskets: one held-out item each.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if log.ordered:
        return _session_queries(log, to_model, task, max_queries, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    histories, targets, unknown = [], [], 0
    for c in range(log.n_contexts):
        for history, target in _basket_query(to_model[log.context(c)], rng):
            if target < 0:
                unknown += 1
                continue
            history = history[history >= 0]
            if task == "i2i":
                history = _pick_one(history, rng)
            if len(history) == 0 or target in history:
                continue
            histories.append(history)
            targets.append(target)
    queries = Queries(histories, np.asarray(targets, dtype=np.int64), unknown)
    return _cap(queries, max_queries, rng)


def _session_queries(log: EventLog, to_model: np.ndarray, task: str, max_queries: int | None,
                     rng: np.random.Generator) -> Queries:
    """All sessions at once, vectorised: only the histories of the queries kept are built, so
    a capped validation slice of a 10M-event log costs well under a second (one Python step
    per event took ~8 s). Histories are views of one array of known items."""
    items = to_model[log.items].astype(np.int64)
    context = np.repeat(np.arange(log.n_contexts), log.lengths())
    known = items >= 0
    known_before = np.concatenate([[0], np.cumsum(known)])  # known events among events[:i]
    context_start = known_before[log.indptr[:-1]][context]  # first known slot of the context
    is_query = np.arange(len(items)) > log.indptr[:-1][context]  # position t >= 1
    unknown = int((is_query & ~known).sum())
    depth = known_before[:-1] - context_start  # known items strictly before the event
    keep = is_query & known & (depth > 0)
    known_items = items[known]
    if task == "s2i":
        keep &= ~_seen_before(context, items, known)
    else:
        last = known_items[np.maximum(known_before[:-1] - 1, 0)]
        keep &= items != last
    rows = np.flatnonzero(keep)
    if max_queries is not None and len(rows) > max_queries:
        rows = rows[np.sort(rng.choice(len(rows), size=max_queries, replace=False))]
    stops = known_before[rows]
    starts = stops - 1 if task == "i2i" else context_start[rows]
    histories = [known_items[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]
    return Queries(histories, items[rows], unknown)


def _seen_before(context: np.ndarray, items: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Whether a known event's item occurred earlier in the same context."""
    key = context * (int(items.max(initial=0)) + 1) + items
    order = np.flatnonzero(known)[np.argsort(key[known], kind="stable")]
    repeat = np.zeros(len(items), dtype=bool)
    repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
    return repeat


def _basket_query(items: np.ndarray, rng: np.random.Generator):
    if len(items) < 2:
        return []
    held = int(rng.integers(len(items)))
    return [(np.delete(items, held), int(items[held]))]


def _pick_one(history: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(history) == 0:
        return history
    return history[int(rng.integers(len(history)))][None]


def _cap(queries: Queries, max_queries: int | None, rng: np.random.Generator) -> Queries:
    if max_queries is None or len(queries) <= max_queries:
        return queries
    keep = np.sort(rng.choice(len(queries), size=max_queries, replace=False))
    return Queries([queries.histories[i] for i in keep], queries.targets[keep],
                   queries.skipped_unknown)


SCORE_CELLS = 1 << 25  # scores held at once: 128 MB of float32 (32 queries at 1M items)


def target_ranks(scorer: Scorer, queries: Queries, batch_size: int = 1024) -> np.ndarray:
    """0-based rank of each target among all items, history excluded, ties counted against."""
    width = len(scorer) if hasattr(scorer, "__len__") else 0
    batch_size = max(1, min(batch_size, SCORE_CELLS // max(width, 1)))
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), batch_size):
        stop = min(start + batch_size, len(queries))
        histories = queries.histories[start:stop]
        scores = np.asarray(scorer.score_histories(histories))
        if not np.issubdtype(scores.dtype, np.floating):  # float32 stays: same order and ties
            scores = scores.astype(np.float64)
        rows = np.arange(stop - start)
        targets = queries.targets[start:stop]
        target_scores = scores[rows, targets].copy()
        for row, history in enumerate(histories):
            scores[row, history] = -np.inf
        scores[rows, targets] = -np.inf
        ranks[start:stop] = (scores >= target_scores[:, None]).sum(axis=1)
    return ranks


def metrics_from_ranks(ranks: np.ndarray, k: int = 20) -> dict[str, float]:
    hit = ranks < k
    n = max(len(ranks), 1)
    return {
        f"HR@{k}": float(hit.sum() / n),
        f"NDCG@{k}": float((1.0 / np.log2(ranks[hit] + 2)).sum() / n),
        f"MRR@{k}": float((1.0 / (ranks[hit] + 1)).sum() / n),
        "queries": int(len(ranks)),
    }


def evaluate(scorer: Scorer, queries: Queries, k: int = 20) -> dict[str, float]:
    return metrics_from_ranks(target_ranks(scorer, queries), k)


def hit_rate(scorer: Scorer, queries: Queries, k: int = 20) -> float:
    return evaluate(scorer, queries, k)[f"HR@{k}"]


def popularity_strata(counts: np.ndarray) -> np.ndarray:
    """Stratum index (0 = most popular) of every item, by its popularity rank."""
    counts = np.asarray(counts, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    share = np.empty(len(counts))
    share[order] = (np.arange(len(counts)) + 0.5) / max(len(counts), 1)
    strata = np.zeros(len(counts), dtype=np.int64)
    for index, (low, _, _) in enumerate(STRATA):
        strata[share >= low] = index
    return strata


def hit_rate_by_popularity(ranks: np.ndarray, targets: np.ndarray, counts: np.ndarray,
                           k: int = 20) -> dict[str, float | None]:
    """HR@k of the queries whose target is in each popularity stratum (None: no such query).

    Aggregate HR hides whether a model only finds popular targets; this shows the tail.
    """
    strata = popularity_strata(counts)[np.asarray(targets, dtype=np.int64)]
    hits = np.asarray(ranks) < k
    return {label: (float(hits[strata == s].mean()) if (strata == s).any() else None)
            for s, (_, _, label) in enumerate(STRATA)}
