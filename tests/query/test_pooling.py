"""History pooling: one definition of the weights, shared by ItemEmbeddings and item-kNN."""

from __future__ import annotations

import numpy as np

from itemvec.config import QueryConfig
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.pooling import history_matrix, history_weights, pool_rows, recency_weights


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


def test_pool_rows_matches_the_sparse_product_and_does_not_depend_on_the_batch():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    histories = [rng.choice(50, size=k, replace=False) for k in (3, 0, 1, 7, 0, 12)]
    pooled = pool_rows(histories, vectors, 3.0, 0.25)
    sparse = history_matrix(histories, 50, 3.0, 0.25, np.float32) @ vectors
    np.testing.assert_allclose(pooled, sparse, rtol=1e-5, atol=1e-6)
    assert not pooled[[1, 4]].any()  # empty histories pool to zeros, not a neighbour's sum
    alone = np.vstack([pool_rows([h], vectors, 3.0, 0.25) for h in histories])
    np.testing.assert_array_equal(alone, pooled)


def test_pool_rows_reads_a_compact_store_through_the_row_map():
    rng = np.random.default_rng(2)
    stored = rng.normal(size=(4, 5)).astype(np.float32)
    rows = np.array([0, 1, 2, 3, 3, 3])  # items 3-5 share one stored vector
    history = [np.array([5, 0, 4])]
    expanded = stored[rows]
    np.testing.assert_array_equal(pool_rows(history, stored, 2.0, 0.0, rows),
                                  pool_rows(history, expanded, 2.0, 0.0))


def test_pool_rows_in_blocks_gives_what_one_block_gives(monkeypatch):
    """Long batches are gathered a block at a time; each history's sum is unchanged."""
    import itemvec.query.pooling as pooling

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 6)).astype(np.float32)
    histories = [rng.choice(300, size=k) for k in (40, 0, 90, 7, 130, 0, 5)]
    whole = pool_rows(histories, vectors, 3.0, 0.25)
    monkeypatch.setattr(pooling, "POOL_BLOCK", 64)  # 90 and 130 exceed it: blocks of their own
    monkeypatch.setattr(pooling, "CACHED_LENGTH", 50)
    np.testing.assert_array_equal(pool_rows(histories, vectors, 3.0, 0.25), whole)
