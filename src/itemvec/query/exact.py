"""Exact top-n recommendation logits for a block of queries, the same for a query whatever
else is in its block.

The logit of item ``v`` for the query ``q`` (the pooled history over the temperature) is
``q . v + w * bias``. A matrix product over a block of queries is the fast way to score every
item, but its rounding depends on the block's shape (OpenBLAS picks kernels by size): a query
scored alone and the same query scored beside 31 others differ in the last bits, and two nearly
tied items could swap. So the product only finds candidates. Items are scanned in slices of
``BLOCK_ITEMS`` (no score array over the whole catalogue is held), each slice's logits reduced to
the maximum of every ``CHUNK`` items. The n-th largest chunk maximum is a lower bound on the
n-th best logit (n chunks, n distinct items); every chunk whose maximum comes within the
rounding margin of it is scored again with one fixed kernel (elementwise product, then a sum
along each row, which depends on nothing but the row) and ranked by logit, then row. The answer
is the exact top-n of those fixed-kernel logits, whether the query came alone or in a batch.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

BLOCK_ITEMS = 32_768  # items scored per matrix product (32 queries: a 4 MiB score block)
CHUNK = 64  # items per chunk maximum
UNIT_ROUNDOFF = 2.0 ** -24  # float32
_NORMS: dict[int, tuple[weakref.ref, float]] = {}
_NORMS_LOCK = threading.Lock()


def fixed_logits(vectors: np.ndarray, bias: np.ndarray, weight: np.float32, query: np.ndarray,
                 rows: np.ndarray, rows_of: np.ndarray | None = None) -> np.ndarray:
    """Logits of ``rows`` for one query by the fixed kernel: the same bits in any batch.
    ``rows_of``: item -> row of ``vectors`` (a compact model's stored rows), None: the same."""
    products = vectors[rows if rows_of is None else rows_of[rows]] * query[None, :]
    return products.sum(axis=1) + weight * bias[rows]


def fixed_logits_block(vectors: np.ndarray, bias: np.ndarray, weight: np.float32,
                       queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``fixed_logits`` of a (queries x candidates) block of ``rows``, one row of candidates a
    query: the same kernel (each sum runs along one contiguous vector), so the same bits as
    ``fixed_logits`` of each query alone."""
    products = vectors[rows] * queries[:, None, :]
    return products.sum(axis=2) + weight * bias[rows]


def logit_top(vectors: np.ndarray, bias: np.ndarray, weight: float, queries: np.ndarray,
              n: int, blocked: np.ndarray | None, seen: Sequence[np.ndarray],
              rows_of: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per query (row of ``queries``), the top-``n`` rows by ``q . v + weight * bias`` (float32)
    and their logits, never ``blocked`` items nor the row's ``seen`` ones; ties by row.
    ``rows_of``: item -> row of ``vectors`` for a compact model (items sharing a stored row),
    so that its vectors are never expanded to one row per item."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if not len(queries):  # recommend_batch([]): no chunk maxima to shape
        return [], []
    weight = np.float32(weight)
    maxima = _chunk_maxima(vectors, bias, weight, queries, blocked, seen, rows_of)
    reach = largest_norm(vectors)
    rows, logits = [], []
    for q, query in enumerate(queries):
        candidates = _candidates(maxima[q], n, float(np.linalg.norm(query)) * reach,
                                 vectors.shape[1], len(bias))
        keep = np.ones(len(candidates), dtype=bool)
        if blocked is not None:
            keep &= ~blocked[candidates]
        if len(seen[q]):
            keep &= ~np.isin(candidates, seen[q])
        candidates = candidates[keep]
        values = fixed_logits(vectors, bias, weight, query, candidates, rows_of)
        best = top_positions(values, n)
        rows.append(candidates[best])
        logits.append(values[best].astype(np.float32))
    return rows, logits


def top_positions(values: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest finite ``values``, best first, ties by position (NaN and
    infinite logits are never returned, as ``util.topk.top_k`` ranks a full score row)."""
    kept = np.flatnonzero(np.isfinite(values))
    if len(kept) > n:
        finite = values[kept]
        floor = np.partition(finite, len(finite) - n)[len(finite) - n]
        kept = kept[finite >= floor]
    return kept[np.argsort(-values[kept], kind="stable")][:n]


def top_positions_rows(values: np.ndarray, n: int) -> list[np.ndarray]:
    """``top_positions`` of each row of a (queries x candidates) block in one sort: the same
    positions (best first, ties by position, non-finite values never returned)."""
    if not values.size:
        return [np.zeros(0, np.int64) for _ in range(len(values))]
    finite = np.isfinite(values)
    order = np.argsort(np.where(finite, -values, np.inf), axis=1, kind="stable")[:, :n]
    keep = finite[np.arange(len(values))[:, None], order]
    return [row[kept] for row, kept in zip(order, keep, strict=True)]


def _chunk_maxima(vectors: np.ndarray, bias: np.ndarray, weight: np.float32,
                  queries: np.ndarray, blocked: np.ndarray | None, seen: Sequence[np.ndarray],
                  rows_of: np.ndarray | None = None) -> np.ndarray:
    """(queries, chunks) maximum logit of every CHUNK items (-inf where all are excluded)."""
    total = len(bias)
    stored = None if rows_of is None else queries @ vectors.T  # each distinct row once
    chunks = -(-total // CHUNK)
    maxima = np.empty((len(queries), chunks), dtype=np.float32)
    for start in range(0, total, BLOCK_ITEMS):
        stop = min(start + BLOCK_ITEMS, total)
        scores = (queries @ vectors[start:stop].T if stored is None
                  else stored[:, rows_of[start:stop]])
        scores += weight * bias[start:stop]
        if blocked is not None:
            scores[:, blocked[start:stop]] = -np.inf
        for q, rows in enumerate(seen):
            inside = rows[(rows >= start) & (rows < stop)]
            scores[q, inside - start] = -np.inf
        width = stop - start
        if width % CHUNK:
            padded = np.full((len(queries), -(-width // CHUNK) * CHUNK), -np.inf, np.float32)
            padded[:, :width] = scores
            scores = padded
        chunks_here = scores.reshape(len(queries), -1, CHUNK)
        top = chunks_here.max(axis=2)
        bad = ~(top < np.inf)  # NaN or +inf: the chunk's finite items must still count
        if bad.any():
            at = np.nonzero(bad)
            part = chunks_here[at]
            part[~np.isfinite(part)] = -np.inf
            top[at] = part.max(axis=1)
        maxima[:, start // CHUNK:-(-stop // CHUNK)] = top
    return maxima


def largest_norm(vectors: np.ndarray) -> float:
    """The largest row norm of ``vectors`` (a little over, as a bound), computed once per
    array object: a query writes nothing to the embeddings, so it is kept here, keyed by the
    array's identity and dropped with the array."""
    key = id(vectors)
    with _NORMS_LOCK:
        known = _NORMS.get(key)
    if known is not None and known[0]() is vectors:
        return known[1]
    largest = 0.0
    for start in range(0, len(vectors), BLOCK_ITEMS):
        block = vectors[start:start + BLOCK_ITEMS]
        largest = max(largest, float(np.einsum("ij,ij->i", block, block).max()))
    value = float(np.sqrt(largest)) * (1 + 1e-5)
    with _NORMS_LOCK:
        _NORMS[key] = (weakref.ref(vectors, lambda _ref, key=key: _forget(key, _ref)), value)
    return value


def _forget(key: int, ref: weakref.ref) -> None:
    with _NORMS_LOCK:
        if key in _NORMS and _NORMS[key][0] is ref:
            del _NORMS[key]


def _margin(reach: float, floor: float, dim: int) -> float:
    """Twice the most two float32 evaluations of a logit near ``floor`` can differ, with a 4x
    reserve: a dot product of ``dim`` terms is off by at most ``dim * u * |q| |v|`` (``reach``
    bounds ``|q| |v|``), adding the bias by an ulp of the logit."""
    return 8 * UNIT_ROUNDOFF * ((dim + 2) * reach + 2 * (abs(floor) + reach))


def _candidates(maxima: np.ndarray, n: int, reach: float, dim: int, total: int) -> np.ndarray:
    """Rows of every chunk that may hold one of the top-``n`` logits."""
    finite = np.flatnonzero(np.isfinite(maxima))
    if len(finite) > n:
        kept = maxima[finite]
        floor = float(np.partition(kept, len(kept) - n)[len(kept) - n])
        finite = finite[kept >= floor - _margin(reach, floor, dim)]
    rows = (finite[:, None] * CHUNK + np.arange(CHUNK)[None, :]).ravel()
    return rows[rows < total]
