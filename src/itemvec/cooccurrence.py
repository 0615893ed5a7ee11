"""Count co-occurring item pairs into a sparse symmetric item x item matrix.

Sessions (ordered contexts) contribute pairs at most ``window`` positions apart, weighted by
distance; baskets contribute all pairs (windowed beyond ``basket_max_size`` so that one huge
basket cannot cost O(n^2)). Work is vectorised per offset: O(events x window) in total.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from itemvec.config import CooccurrenceConfig
from itemvec.ingest import EventLog
from itemvec.registry import Registry

logger = logging.getLogger(__name__)

reweightings: Registry = Registry("reweighting")


def context_weights(log: EventLog, config: CooccurrenceConfig) -> np.ndarray:
    """Per-context multiplier: exponential time decay relative to the newest context."""
    ends = log.context_end_times()
    if config.time_decay_half_life is None or ends is None:
        return np.ones(log.n_contexts, dtype=np.float64)
    age = ends.max() - ends
    return np.power(0.5, age / config.time_decay_half_life)


def _offsets(log: EventLog, config: CooccurrenceConfig) -> int:
    if log.ordered:
        return config.window
    longest = int(log.lengths().max(initial=0))
    return max(1, min(longest - 1, config.basket_max_size - 1))


def count_pairs(log: EventLog, config: CooccurrenceConfig) -> sp.csr_matrix:
    """The symmetric co-occurrence matrix (float32 CSR, zero diagonal) of ``log``."""
    n = log.n_items
    ctx = np.repeat(np.arange(log.n_contexts), log.lengths())
    # A pair weighs sqrt(w_a * w_b) * decay: each side carries the square root of both factors.
    event_scale = np.sqrt(log.weights.astype(np.float64) * context_weights(log, config)[ctx])
    total = sp.csr_matrix((n, n), dtype=np.float64)
    for offset in range(1, _offsets(log, config) + 1):
        left = np.arange(len(ctx) - offset)
        right = left + offset
        same = ctx[left] == ctx[right]
        left, right = left[same], right[same]
        if len(left) == 0:
            break
        a, b = log.items[left], log.items[right]
        distinct = a != b
        weight = event_scale[left] * event_scale[right]
        if log.ordered and config.distance_weighting == "harmonic":
            weight = weight / offset
        part = sp.coo_matrix((weight[distinct], (a[distinct], b[distinct])), shape=(n, n))
        total = total + part.tocsr()
    matrix = (total + total.T).tocsr().astype(np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    logger.info("co-occurrence: %d items, %d non-zero pairs", n, matrix.nnz)
    return matrix


def prune_rare_items(log: EventLog, min_count: int) -> np.ndarray:
    """Mask of items seen in at least ``min_count`` contexts."""
    return log.item_counts() >= min_count


@reweightings.register("none")
def _no_reweighting(matrix: sp.csr_matrix, **_: float) -> sp.csr_matrix:
    return matrix.copy()


@reweightings.register("power")
def power(matrix: sp.csr_matrix, exponent: float = 0.75, **_: float) -> sp.csr_matrix:
    """Frequency dampening: counts ** exponent."""
    out = matrix.copy().astype(np.float64)
    out.data = np.power(out.data, exponent)
    return out.astype(np.float32)


@reweightings.register("ppmi")
def ppmi(matrix: sp.csr_matrix, shift: float = 1.0, smoothing: float = 0.75,
         **_: float) -> sp.csr_matrix:
    """Shifted positive PMI: max(PMI - log(shift), 0), with context-distribution smoothing.

    SGNS with k negatives factorises PMI - log k (Levy & Goldberg 2014); smoothing the column
    marginal with ** 0.75 is their fix for PMI's bias towards rare items.
    """
    matrix = matrix.tocsr().astype(np.float64)
    matrix.eliminate_zeros()  # explicit zeros would be log(0)
    total = matrix.sum()
    rows = np.asarray(matrix.sum(axis=1)).ravel()
    cols = np.power(np.asarray(matrix.sum(axis=0)).ravel(), smoothing)
    cols = cols / cols.sum() * total
    coo = matrix.tocoo()
    pmi = np.log(coo.data * total / (rows[coo.row] * cols[coo.col])) - np.log(shift)
    keep = pmi > 0
    out = sp.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)
    return out.astype(np.float32)


def reweight(matrix: sp.csr_matrix, name: str, **params: float) -> sp.csr_matrix:
    return reweightings.get(name)(matrix, **params)


# -- privacy guard -------------------------------------------------------------------------------
def count_support(log: EventLog, config: CooccurrenceConfig) -> sp.csr_matrix:
    """Distinct contexts in which each pair co-occurs (same windowing as ``count_pairs``).

    ``count_pairs`` sums weights, so one context repeating a pair counts many times; the privacy
    guard needs how many *different* contexts (sessions, baskets, people) a pair rests on.
    """
    n = log.n_items
    ctx = np.repeat(np.arange(log.n_contexts, dtype=np.int64), log.lengths())
    keys, owners = [], []
    for offset in range(1, _offsets(log, config) + 1):
        left = np.arange(len(ctx) - offset)
        right = left + offset
        keep = (ctx[left] == ctx[right]) & (log.weights[left] > 0) & (log.weights[right] > 0)
        left, right = left[keep], right[keep]
        if len(left) == 0:
            break
        a, b = log.items[left].astype(np.int64), log.items[right].astype(np.int64)
        distinct = a != b
        lo, hi = np.minimum(a, b)[distinct], np.maximum(a, b)[distinct]
        keys.append(lo * n + hi)
        owners.append(ctx[left][distinct])
    if not keys:
        return sp.csr_matrix((n, n), dtype=np.float32)
    key, owner = np.concatenate(keys), np.concatenate(owners)
    order = np.lexsort((owner, key))
    key, owner = key[order], owner[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = (key[1:] != key[:-1]) | (owner[1:] != owner[:-1])
    pairs, support = np.unique(key[first], return_counts=True)
    lo, hi = pairs // n, pairs % n
    upper = sp.coo_matrix((support.astype(np.float32), (lo, hi)), shape=(n, n)).tocsr()
    return (upper + upper.T).tocsr()


def apply_min_support(matrix: sp.csr_matrix, log: EventLog,
                      config: CooccurrenceConfig) -> sp.csr_matrix:
    """``matrix`` without pairs seen in fewer than ``config.min_support`` distinct contexts.

    Applied to what a bundle stores (and so to what explanations can show): evidence resting on
    a handful of sessions could identify the people behind them.
    """
    k = getattr(config, "min_support", 1)
    if k <= 1:
        return matrix
    support = count_support(log, config)
    mask = support.multiply(support >= k).astype(bool).astype(np.float32)
    kept = matrix.multiply(mask).tocsr().astype(np.float32)
    kept.eliminate_zeros()
    logger.info("min-support %d: kept %d of %d non-zero pairs", k, kept.nnz, matrix.nnz)
    return kept
