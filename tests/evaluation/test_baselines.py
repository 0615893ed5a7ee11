"""Popularity and item-kNN baselines on a tiny matrix with hand-computed scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from itemvec.evaluation.baselines import build_baseline
from itemvec.util.errors import ConfigError

# a-b co-occur twice, b-c once
MATRIX = sp.csr_matrix(np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]], dtype=np.float32))
COUNTS = np.array([5, 9, 2])


def test_popularity_ignores_the_history():
    scorer = build_baseline("popularity", MATRIX, COUNTS)
    scores = scorer.score_histories([np.array([0]), np.array([], dtype=np.int64)])
    np.testing.assert_array_equal(scores, [[5, 9, 2], [5, 9, 2]])


def test_itemknn_cosine_normalised_counts():
    scorer = build_baseline("itemknn", MATRIX, COUNTS, half_life=3.0)
    # row sums 2, 3, 1: sim(a,b) = 2 / sqrt(2 * 3), sim(b,c) = 1 / sqrt(3 * 1)
    expected = np.array([[0, 2 / np.sqrt(6), 0],
                         [2 / np.sqrt(6), 0, 1 / np.sqrt(3)],
                         [0, 1 / np.sqrt(3), 0]])
    np.testing.assert_allclose(scorer.similarity.toarray(), expected, rtol=1e-6)
    scores = scorer.score_histories([np.array([0])])
    np.testing.assert_allclose(scores[0], expected[0], atol=1e-8)
    assert np.argsort(-scores[0])[0] == 1
    assert scores[0, 2] > 0 and scores[0, 2] < 1e-8  # the popularity tie-break only


def test_itemknn_pools_history_with_recency_weights():
    scorer = build_baseline("itemknn", MATRIX, COUNTS, half_life=1.0)
    score = scorer.score_histories([np.array([0, 2])])[0, 1]
    older, newer = 0.5, 1.0  # one position old: half the weight
    want = (older * 2 / np.sqrt(6) + newer * 1 / np.sqrt(3)) / (older + newer)
    assert score == pytest.approx(want, rel=1e-6, abs=1e-8)


def test_unknown_baseline_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown baseline 'bpr'; known: .*itemknn.*popularity"):
        build_baseline("bpr", MATRIX, COUNTS)
