"""Reference recommenders scored with the same protocol as itemvec: popularity, item-kNN."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from itemvec.query.pooling import history_matrix
from itemvec.util.registry import Registry

baselines: Registry = Registry("baseline")


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
