"""History pooling: one weighted sum of a history's item vectors, shared by every recommender.

The newest item counts most (recency half-life in positions); weights sum to 1, then scale
with the effective number of items ``(sum w)^2 / sum w^2`` to the power ``evidence_power``, so
a longer history is more evidence. ``ItemEmbeddings`` pools vectors with it; the item-kNN
baseline pools similarity rows with the same weights (``evidence_power`` 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def recency_weights(length: int, half_life: float) -> np.ndarray:
    """0.5 ** (age / half_life) per position, oldest first; all ones when ``half_life`` <= 0."""
    age = np.arange(length - 1, -1, -1, dtype=np.float64)
    return np.power(0.5, age / half_life) if half_life > 0 else np.ones(length)


def history_weights(length: int, half_life: float, evidence_power: float = 0.0) -> np.ndarray:
    """Weight of each history position (oldest first) in the pooled query (float64)."""
    if length == 0:
        return np.zeros(0, dtype=np.float64)
    weights = recency_weights(length, half_life)
    weights /= weights.sum()
    effective = 1.0 / float(np.square(weights).sum())
    return weights * effective ** evidence_power


def history_matrix(histories: Sequence[np.ndarray], n_items: int, half_life: float,
                   evidence_power: float = 0.0, dtype: type = np.float64) -> sp.csr_matrix:
    """Sparse (histories x items) pooling weights; ``matrix @ vectors`` pools every history.

    Weights depend only on a history's length, so they are computed once per length.
    """
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    if not lengths.any():
        return sp.csr_matrix((len(histories), n_items), dtype=dtype)
    by_length = {n: history_weights(int(n), half_life, evidence_power).astype(dtype)
                 for n in np.unique(lengths)}
    weights = np.concatenate([by_length[n] for n in lengths])
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((weights, items, indptr), shape=(len(histories), n_items))
