"""Reference recommenders scored with the same protocol as itemvec: popularity, item-kNN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from itemvec.util.registry import Registry

baselines: Registry = Registry("baseline")


def recency_weights(length: int, half_life: float) -> np.ndarray:
    age = np.arange(length - 1, -1, -1, dtype=np.float64)
    return np.power(0.5, age / half_life) if half_life > 0 else np.ones(length)


def history_matrix(histories: Sequence[np.ndarray], n_items: int,
                   half_life: float) -> sp.csr_matrix:
    """Sparse (queries x items) matrix of recency weights, rows summing to 1."""
    rows, cols, vals = [], [], []
    for row, items in enumerate(histories):
        if len(items) == 0:
            continue
        weights = recency_weights(len(items), half_life)
        rows.append(np.full(len(items), row))
        cols.append(items)
        vals.append(weights / weights.sum())
    if not rows:
        return sp.csr_matrix((len(histories), n_items))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(histories), n_items))


@baselines.register("popularity")
class Popularity:
    """Most co-occurring items first, whatever the history."""

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray, **_) -> None:
        self.scores = np.asarray(item_counts, dtype=np.float64)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.tile(self.scores, (len(histories), 1))


@baselines.register("itemknn")
class ItemKNN:
    """Co-occurrence item-kNN: cosine-normalised counts, history pooled with recency weights.

    A tiny popularity term breaks the ties between items that never co-occur with the history.
    """

    def __init__(self, cooccurrence: sp.csr_matrix, item_counts: np.ndarray,
                 half_life: float = 3.0, **_) -> None:
        norms = np.sqrt(np.asarray(cooccurrence.sum(axis=1)).ravel())
        inverse = sp.diags(1.0 / np.maximum(norms, 1e-12))
        self.similarity = (inverse @ cooccurrence @ inverse).tocsr()
        self.half_life = half_life
        counts = np.asarray(item_counts, dtype=np.float64)
        self.tiebreak = 1e-9 * counts / max(counts.max(), 1.0)

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        weights = history_matrix(histories, self.similarity.shape[0], self.half_life)
        return np.asarray((weights @ self.similarity).todense()) + self.tiebreak[None, :]


def build_baseline(name: str, cooccurrence: sp.csr_matrix, item_counts: np.ndarray, **params):
    return baselines.get(name)(cooccurrence, item_counts, **params)
