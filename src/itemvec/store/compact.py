"""Compact storage of cold items: unique vectors plus a row -> vector index.

A catalogue's cold items are embedded from their features alone, so items with the same
feature row share one vector: a million cold rows often hold a few thousand distinct ones.
A compact bundle stores ``embeddings.npy`` as warm rows then unique cold vectors, and
``vector_rows.npy`` (int32, one per item) saying which stored row is each item's vector.
"""

from __future__ import annotations

import numpy as np

ROWS_DTYPE = np.int32


def unique_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: the row of each distinct row's first occurrence (in order of first
    occurrence) and, per row, the number of its distinct row; rows compare by their bytes."""
    matrix = np.ascontiguousarray(matrix)
    if len(matrix) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = matrix.reshape(len(matrix), -1).view(
        np.dtype((np.void, matrix.dtype.itemsize * int(np.prod(matrix.shape[1:])))))
    _, first, inverse = np.unique(keys.ravel(), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # number distinct rows by first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]


def compact_cold(vectors: np.ndarray, n_warm: int) -> tuple[np.ndarray, np.ndarray]:
    """``(stored, rows)`` for full ``vectors``: warm rows as they are, then each distinct cold
    vector once; ``rows[i]`` is item i's row in ``stored``."""
    first, inverse = unique_rows(vectors[n_warm:])
    stored = np.concatenate([vectors[:n_warm], vectors[n_warm:][first]])
    rows = np.concatenate([np.arange(n_warm), n_warm + inverse]).astype(ROWS_DTYPE)
    return stored, rows


def append_cold(stored: np.ndarray, n_warm: int, new: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(stored', rows)``: ``stored`` with the distinct ``new`` vectors it lacks appended, and
    each new vector's row in it. Rows of ``stored`` keep their place (an existing cold vector
    with the same bytes is reused), so the old rows index stays valid."""
    if len(new) == 0:
        return stored, np.zeros(0, ROWS_DTYPE)
    new = np.ascontiguousarray(new, dtype=stored.dtype)
    first, inverse = unique_rows(new)
    known = {row.tobytes(): n_warm + i for i, row in enumerate(np.asarray(stored[n_warm:]))}
    at = np.empty(len(first), dtype=np.int64)
    added = []
    for j, row in enumerate(new[first]):
        found = known.get(row.tobytes())
        if found is None:
            found = len(stored) + len(added)
            added.append(j)
        at[j] = found
    if added:
        stored = np.concatenate([stored, new[first[added]]])
    return stored, at[inverse].astype(ROWS_DTYPE)


def drop_unused(stored: np.ndarray, rows: np.ndarray, n_warm: int
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(stored', rows', dropped)``: the cold stored vectors no item's row points to left out
    (an item embedded again with new features leaves its old vector unused), the others in
    their order, ``rows`` renumbered to match; ``dropped`` how many were left out."""
    used = np.zeros(len(stored), dtype=bool)
    used[:n_warm] = True
    used[np.asarray(rows)] = True
    if used.all():
        return stored, rows, 0
    renumber = np.cumsum(used) - 1
    return (np.asarray(stored)[used], renumber[np.asarray(rows)].astype(ROWS_DTYPE),
            int((~used).sum()))
