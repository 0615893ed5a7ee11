"""Top-k selection shared by every ranking (queries, index fallbacks, reports, text search)."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest finite scores, best first (ties keep index order).

    ``argpartition`` then a stable sort of the ``n`` kept: O(items + n log n), not a full sort.
    """
    finite = np.isfinite(scores)
    n = min(n, int(finite.sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    part = part[np.isfinite(scores[part])]
    return part[np.argsort(-scores[part], kind="stable")]
