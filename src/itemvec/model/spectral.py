"""The spectral start: encoder weights from a factorisation of the co-occurrence matrix.

Training starts from the rank-``dim`` factor of the shifted-PPMI matrix and from log-popularity
logits, so epoch 0 is already a good model; the trainer, side features and updates all start
here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from itemvec.counting.cooccurrence import ppmi


def spectral_vectors(matrix: sp.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """Rank-``dim`` factor of the shifted-PPMI matrix: U * sqrt(S), a strong starting point."""
    positive = ppmi(matrix)
    n = matrix.shape[0]
    rank = min(dim, max(1, n - 1))
    if positive.nnz == 0:
        return np.random.default_rng(seed).normal(0, 0.1, size=(n, dim)).astype(np.float32)
    u, s, _ = randomized_svd(positive, n_components=rank, n_iter=5, random_state=seed)
    vectors = np.zeros((n, dim), dtype=np.float32)
    vectors[:, :rank] = u * np.sqrt(s)
    empty = np.linalg.norm(vectors, axis=1) < 1e-8
    vectors[empty] = np.random.default_rng(seed).normal(0, 0.01, size=(int(empty.sum()), dim))
    # Unit rows: cosines are unchanged, but Adam's step (~lr per coordinate) is now small next
    # to the entries whatever the vocabulary size; raw U * sqrt(S) entries shrink like
    # 1/sqrt(items), and the first epochs would wash the spectral start out.
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def popularity_logits(matrix: sp.csr_matrix) -> np.ndarray:
    """Centred log co-occurrence mass per item: the start of the learned popularity logit."""
    mass = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
    logits = np.log(mass + 1.0)
    return (logits - logits.mean()).astype(np.float32)
