"""History pooling: one definition of the weights, shared by ItemEmbeddings and item-kNN."""

from __future__ import annotations

import numpy as np

from itemvec.config import QueryConfig
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.pooling import history_matrix, history_weights, recency_weights


def test_history_matrix_rows_sum_to_one_without_evidence():
    weights = history_matrix([np.array([0, 1, 2]), np.array([], dtype=np.int64)], 3, 3.0)
    np.testing.assert_allclose(np.asarray(weights.sum(axis=1)).ravel(), [1, 0])
    np.testing.assert_allclose(recency_weights(3, 1.0), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(recency_weights(3, 0.0), [1, 1, 1])


def test_evidence_scales_by_the_effective_history_length():
    flat = history_weights(4, 0.0, evidence_power=0.5)  # 4 equal items: effective length 4
    np.testing.assert_allclose(flat, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(history_weights(4, 0.0), [0.25] * 4)
    assert len(history_weights(0, 2.0, 0.5)) == 0


def test_item_embeddings_pool_with_the_shared_weights():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 3)).astype(np.float32)
    query = QueryConfig(recency_half_life=2.0, evidence_power=0.5)
    emb = ItemEmbeddings([f"i{k}" for k in range(5)], vectors, query=query)
    histories = [np.array([4, 0, 0]), np.array([], dtype=np.int64), np.array([2])]
    weights = history_weights(3, 2.0, 0.5)
    expected = np.stack([weights @ vectors[[4, 0, 0]], np.zeros(3), vectors[2]])
    np.testing.assert_allclose(emb.pool(histories), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.history_weights(3), weights, rtol=1e-6)
