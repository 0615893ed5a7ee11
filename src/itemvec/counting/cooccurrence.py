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
from itemvec.data.ingest import EventLog

logger = logging.getLogger(__name__)


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


PPMI_BLOCK = 1 << 24  # non-zeros per block of the PPMI computation


def ppmi(matrix: sp.csr_matrix, shift: float = 1.0, smoothing: float = 0.75,
         **_: float) -> sp.csr_matrix:
    """Shifted positive PMI: max(PMI - log(shift), 0), with context-distribution smoothing.

    SGNS with k negatives factorises PMI - log k (Levy & Goldberg 2014); smoothing the column
    marginal with ** 0.75 is their fix for PMI's bias towards rare items.
    """
    matrix = matrix.tocsr()
    wide = sp.csr_matrix((matrix.data.astype(np.float64), matrix.indices, matrix.indptr),
                         shape=matrix.shape)  # float64 sums; the index arrays are shared
    total = wide.sum()
    rows = np.asarray(wide.sum(axis=1)).ravel()
    cols = np.power(np.asarray(wide.sum(axis=0)).ravel(), smoothing)
    del wide
    cols = cols / cols.sum() * total
    pmi, keep = np.empty(matrix.nnz, dtype=np.float32), np.empty(matrix.nnz, dtype=bool)
    row_of = np.repeat(np.arange(matrix.shape[0], dtype=np.int32), np.diff(matrix.indptr))
    # In blocks of entries: with 10^8 non-zeros each float64 temporary of the whole would be ~1.5 GB.
    for start in range(0, matrix.nnz, PPMI_BLOCK):
        stop = min(start + PPMI_BLOCK, matrix.nnz)
        data = matrix.data[start:stop].astype(np.float64)
        with np.errstate(divide="ignore"):  # explicit zeros: log(0) = -inf, dropped below
            block = np.log(data * total / (rows[row_of[start:stop]] *
                                           cols[matrix.indices[start:stop]])) - np.log(shift)
        pmi[start:stop] = block
        keep[start:stop] = block > 0
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of[keep], minlength=matrix.shape[0]), out=indptr[1:])
    return sp.csr_matrix((pmi[keep], matrix.indices[keep], indptr), shape=matrix.shape)


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
