"""Baskets or sessions, decided from the data when ``ingest.context_kind`` is ``auto``.

A time column does not make a context a session. Basket logs often carry an order timestamp
shared by every item of the order, a catalogue order or an add-to-cart position, and treating
such baskets as ordered sessions (windowed pairs, next-item fine-tuning, recency pooling) costs
up to a third of the hit rate. So ``auto`` keeps the order a log gives only where it carries
behaviour, judged on the log itself:

1. **ties**: when nearly all consecutive events of a context share one timestamp there is no
   order to keep: baskets.
2. **a sort order**: when item pairs that are neighbours in several contexts are always
   neighbours in the same direction and those directions never close a cycle (a -> b -> c ->
   a), one ranking of the items orders every context: the events are listed by item (id, name,
   catalogue position), not by what the shopper did first: baskets. (A strongly directed
   process, such as episodes watched in order, goes round cycles somewhere.)
3. **signal**: where the order carries behaviour, neighbours (t-1, t) are more related than
   events two apart (t-2, t). "Related" is how often the pair are neighbours in *other*
   contexts (leave one context out, so no context vouches for itself); under an order that is
   noise the two are exchangeable and their ratio, the adjacency lift, is 1. Sessions when the
   lift is clearly above 1; baskets when its confidence interval rules out a lift of
   ``MIN_LIFT``; sessions when the log is too small to tell either way (the order is kept).

Contexts without an order (no time column, no given sequence) are baskets. An explicit
``session`` or ``basket`` is never second-guessed. The decision and its evidence go into the
training log line, the bundle manifest (``stats.context_kind_decision``) and the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from itemvec.config import IngestConfig

logger = logging.getLogger(__name__)

Kind = Literal["session", "basket"]
TIE_SHARE = 0.9  # consecutive events sharing a timestamp, at or above: baskets
SORTED_SHARE = 0.98  # repeated neighbour pairs in their majority direction, at or above: sorted
MIN_REPEATED_PAIRS = 20  # neighbour pairs seen in >= 2 contexts needed to call a sort order
MIN_LIFT = 1.05  # baskets when the lift's upper bound is below this
SIGNAL_SE = 3.0  # sessions when the lift is this many standard errors above 1
NOISE_SE = 2.0  # the upper bound (lift + NOISE_SE * se) that must stay below MIN_LIFT
MAX_EVENTS = 2_000_000  # larger logs are judged on a seeded sample of whole contexts


@dataclass(frozen=True)
class KindDecision:
    """Sessions or baskets, who chose (``config`` or ``data``), why, and the measurements."""

    kind: Kind
    chosen_by: Literal["config", "data"]
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ordered(self) -> bool:
        return self.kind == "session"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chosen_by": self.chosen_by, "reason": self.reason,
                "evidence": dict(self.evidence)}

    def describe(self) -> str:
        """One line for logs and reports."""
        how = "set by ingest.context_kind" if self.chosen_by == "config" else "decided from the data"
        return f"contexts are {self.kind}s ({how}): {self.reason}"


def explicit(kind: Kind) -> KindDecision:
    return KindDecision(kind, "config", f"ingest.context_kind = {kind!r}")


def decide_kind(context: np.ndarray, items: np.ndarray, times: np.ndarray | None,
                config: IngestConfig, has_order: bool, seed: int = 0) -> KindDecision:
    """The kind of a log's contexts from its events in order.

    ``context`` and ``items`` are integer codes per event, grouped by context and sorted
    within it (by time, then file order); ``times`` the matching timestamps or None;
    ``has_order`` whether the order means anything at all (a time column or given sequences).
    """
    if config.context_kind != "auto":
        return explicit(config.context_kind)
    if not has_order:
        return KindDecision("basket", "data", "no time column, so no order to keep (name one "
                            "with --time, or set --context-kind session for file order)")
    context, items, times = _sample(context, items, times, seed)
    evidence: dict[str, Any] = {"events_examined": int(len(items))}
    if times is not None:
        evidence["tie_share"] = round(_tie_share(context, times), 4)
        if evidence["tie_share"] >= TIE_SHARE:
            return KindDecision("basket", "data", f"{evidence['tie_share']:.0%} of consecutive "
                                "events in a context share one timestamp", evidence)
    context, items = _collapse_repeats(context, items)
    share, repeated, acyclic = direction_share(context, items)
    evidence.update(direction_share=round(share, 4), repeated_pairs=repeated,
                    neighbour_order_acyclic=acyclic)
    if repeated >= MIN_REPEATED_PAIRS and share >= SORTED_SHARE and acyclic:
        return KindDecision("basket", "data", f"{share:.1%} of item pairs that are neighbours in "
                            "several contexts come in the same direction, and one ranking of the "
                            "items orders them all: a sort order (by item), not behaviour",
                            evidence)
    return _judge_signal(context, items, evidence)


def _judge_signal(context: np.ndarray, items: np.ndarray,
                  evidence: dict[str, Any]) -> KindDecision:
    lift, se, compared = adjacency_lift(context, items)
    evidence.update(positions_compared=compared,
                    adjacency_lift=None if np.isnan(lift) else round(lift, 4),
                    lift_se=None if np.isnan(se) else round(se, 4))
    if np.isnan(lift):
        return KindDecision("session", "data", "too few repeated item pairs to measure whether "
                            "the order carries signal; the order is kept", evidence)
    stated = f"neighbours are {lift:.3f}x as related as events two apart (+-{se:.3f})"
    if lift - SIGNAL_SE * se > 1.0:
        return KindDecision("session", "data", f"the order carries signal: {stated}", evidence)
    if lift + NOISE_SE * se < MIN_LIFT:
        return KindDecision("basket", "data", f"the order carries no measurable signal: {stated}",
                            evidence)
    return KindDecision("session", "data", f"too little data to tell ({stated}); the order is "
                        "kept", evidence)


def _sample(context: np.ndarray, items: np.ndarray, times: np.ndarray | None,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Whole contexts, seeded, about ``MAX_EVENTS`` events of a larger log."""
    if len(items) <= MAX_EVENTS:
        return context, items, times
    keep_context = np.random.default_rng(seed).random(int(context.max()) + 1)
    keep = keep_context[context] < MAX_EVENTS / len(items)
    return context[keep], items[keep], None if times is None else times[keep]


def _tie_share(context: np.ndarray, times: np.ndarray) -> float:
    same = context[1:] == context[:-1]
    if not same.any():
        return 0.0
    return float((times[1:][same] == times[:-1][same]).mean())


def _collapse_repeats(context: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop an event that repeats the item just before it in the same context."""
    keep = np.ones(len(items), dtype=bool)
    keep[1:] = (context[1:] != context[:-1]) | (items[1:] != items[:-1])
    return context[keep], items[keep]


def _depth(context: np.ndarray) -> np.ndarray:
    """Position of each event within its context (0 for the first)."""
    starts = np.flatnonzero(np.r_[True, context[1:] != context[:-1]])
    lengths = np.diff(np.r_[starts, len(context)])
    return np.arange(len(context)) - np.repeat(starts, lengths)


def _pair_key(a: np.ndarray, b: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 per unordered pair."""
    return np.minimum(a, b).astype(np.int64) * n_items + np.maximum(a, b)


def direction_share(context: np.ndarray, items: np.ndarray) -> tuple[float, int, bool]:
    """Share of neighbour occurrences in their pair's majority direction, over the unordered
    pairs that are neighbours at least twice; how many such pairs there are; and whether the
    majority directions of all neighbour pairs are acyclic (one ranking orders them all)."""
    n_items = int(items.max(initial=0)) + 1
    after = np.flatnonzero(_depth(context) >= 1)
    a, b = items[after - 1], items[after]
    pairs = pl.DataFrame({"key": _pair_key(a, b, n_items), "forward": a < b})
    counts = pairs.group_by("key").agg(pl.len().alias("n"), pl.col("forward").sum().alias("f"))
    acyclic = _acyclic(counts, n_items)
    counts = counts.filter(pl.col("n") >= 2)
    if counts.height == 0:
        return 0.0, 0, acyclic
    n, forward = counts["n"].to_numpy(), counts["f"].to_numpy()
    return float(np.maximum(forward, n - forward).sum() / n.sum()), counts.height, acyclic


def _acyclic(counts: pl.DataFrame, n_items: int) -> bool:
    """Whether the graph of neighbour pairs, each in its majority direction (ties left out),
    has no directed cycle: every strongly connected component is a single item."""
    key, n, forward = (counts[c].to_numpy() for c in ("key", "n", "f"))
    low, high = key // n_items, key % n_items
    up, down = 2 * forward > n, 2 * forward < n
    source = np.concatenate([low[up], high[down]])
    target = np.concatenate([high[up], low[down]])
    graph = sp.csr_matrix((np.ones(len(source), np.int8), (source, target)),
                          shape=(n_items, n_items))
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    return n_components == n_items


def adjacency_lift(context: np.ndarray, items: np.ndarray) -> tuple[float, float, int]:
    """Relatedness of (t-1, t) over that of (t-2, t), its standard error (contexts as the
    independent units) and the number of positions compared; NaN when nothing repeats."""
    n_items = int(items.max(initial=0)) + 1
    depth = _depth(context)
    after = np.flatnonzero(depth >= 1)
    neighbours = pl.DataFrame({"key": _pair_key(items[after - 1], items[after], n_items),
                               "context": context[after]})
    counts = (neighbours.group_by("key").len().rename({"len": "total"}),
              neighbours.group_by("key", "context").len().rename({"len": "own"}))
    at = np.flatnonzero(depth >= 2)
    at = at[items[at] != items[at - 2]]  # a -> b -> a: no pair two apart
    if len(at) == 0:
        return float("nan"), float("nan"), 0
    near = _elsewhere(counts, _pair_key(items[at - 1], items[at], n_items), context[at])
    far = _elsewhere(counts, _pair_key(items[at - 2], items[at], n_items), context[at])
    if far.sum() == 0:
        return float("nan"), float("nan"), len(at)
    lift = float(near.sum() / far.sum())
    residual = pl.DataFrame({"context": context[at], "r": near - lift * far})
    per_context = residual.group_by("context").agg(pl.col("r").sum())["r"].to_numpy()
    se = float(np.sqrt(np.square(per_context).sum()) / far.sum())
    return lift, se, len(at)


def _elsewhere(counts: tuple[pl.DataFrame, pl.DataFrame], keys: np.ndarray,
               context: np.ndarray) -> np.ndarray:
    """log(1 + times each pair are neighbours in contexts other than its own); ``counts``:
    neighbour occurrences per pair in all contexts and per (pair, context)."""
    total, own = counts
    query = pl.DataFrame({"key": keys, "context": context})
    query = (query.join(total, on="key", how="left", maintain_order="left")
             .join(own, on=["key", "context"], how="left", maintain_order="left"))
    other = query["total"].fill_null(0) - query["own"].fill_null(0)
    return np.log1p(other.to_numpy().astype(np.float64))
