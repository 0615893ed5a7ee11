"""Co-occurrence counting on hand-built logs with known matrices, and PPMI."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from itemvec.config import CooccurrenceConfig
from itemvec.counting.cooccurrence import count_pairs, ppmi, prune_rare_items
from itemvec.data.ingest import EventLog

VOCAB = ["a", "b", "c", "d", "e", "f"]


def make_log(contexts: list[list[str]], ordered: bool, times: list[list[float]] | None = None,
             weights: list[list[float]] | None = None, vocab: list[str] = VOCAB) -> EventLog:
    index = {item: i for i, item in enumerate(vocab)}
    lengths = [len(c) for c in contexts]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = [index[i] for c in contexts for i in c]
    return EventLog(
        item_ids=np.array(vocab, dtype=object),
        context_ids=np.array([f"c{i}" for i in range(len(contexts))], dtype=object),
        indptr=indptr, items=np.array(flat, dtype=np.int32),
        weights=(np.ones(len(flat), np.float32) if weights is None else
                 np.array([w for ws in weights for w in ws], dtype=np.float32)),
        times=None if times is None else np.array([t for ts in times for t in ts], np.float64),
        ordered=ordered)


def dense(matrix: sp.csr_matrix, n: int = 4) -> np.ndarray:
    return matrix.toarray()[:n, :n]


def test_session_window_with_harmonic_weights():
    log = make_log([["a", "b", "c", "d"]], ordered=True)
    got = dense(count_pairs(log, CooccurrenceConfig(window=2)))
    h = 0.5  # distance 2 counts half
    expected = np.array([[0, 1, h, 0],
                         [1, 0, 1, h],
                         [h, 1, 0, 1],
                         [0, h, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(got, expected)


def test_uniform_weighting_and_pairs_sum_over_contexts():
    log = make_log([["a", "b", "c"], ["b", "a"]], ordered=True)
    got = dense(count_pairs(log, CooccurrenceConfig(window=5, distance_weighting="uniform")), 3)
    np.testing.assert_allclose(got, [[0, 2, 1], [2, 0, 1], [1, 1, 0]])


def test_no_pairs_across_context_boundaries():
    log = make_log([["a", "b"], ["c", "d"]], ordered=True)
    matrix = count_pairs(log, CooccurrenceConfig(window=5))
    assert matrix[1, 2] == 0 and matrix[0, 3] == 0
    assert matrix[0, 1] == 1 and matrix[2, 3] == 1


def test_diagonal_is_zero_even_with_repeats():
    log = make_log([["a", "b", "a", "a", "b"]], ordered=True)
    matrix = count_pairs(log, CooccurrenceConfig(window=3, distance_weighting="uniform"))
    assert matrix.diagonal().sum() == 0
    # offsets 1: ab ba aa(skip) ab; 2: aa(skip) ba ab; 3: aa? no: a(0)-a(3) skip, b(1)-b(4) skip
    assert matrix[0, 1] == 5


def test_baskets_count_all_pairs_uniformly():
    log = make_log([["a", "b", "c", "d"]], ordered=False)
    got = dense(count_pairs(log, CooccurrenceConfig(window=1)))
    expected = np.ones((4, 4), dtype=np.float32) - np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(got, expected)  # window does not apply to baskets


def test_basket_max_size_windows_huge_baskets():
    log = make_log([["a", "b", "c", "d", "e"]], ordered=False)
    matrix = count_pairs(log, CooccurrenceConfig(basket_max_size=3))
    # pairs at most basket_max_size - 1 = 2 apart: a-c yes, a-d no
    assert matrix[0, 2] == 1 and matrix[0, 3] == 0 and matrix[0, 4] == 0 and matrix[1, 3] == 1
    assert count_pairs(log, CooccurrenceConfig(basket_max_size=5))[0, 4] == 1


def test_matrix_is_symmetric_float32_csr():
    rng = np.random.default_rng(0)
    contexts = [list(rng.choice(VOCAB, size=rng.integers(1, 8))) for _ in range(50)]
    for ordered in (True, False):
        matrix = count_pairs(make_log(contexts, ordered), CooccurrenceConfig(window=3))
        assert sp.isspmatrix_csr(matrix) and matrix.dtype == np.float32
        assert abs(matrix - matrix.T).max() == 0
        assert matrix.diagonal().sum() == 0
        assert matrix.data.min() > 0  # explicit zeros eliminated


def test_event_weights_scale_pairs_by_geometric_mean():
    log = make_log([["a", "b", "c"]], ordered=True, weights=[[4, 1, 9]])
    matrix = count_pairs(log, CooccurrenceConfig(window=1))
    assert matrix[0, 1] == pytest.approx(2.0)  # sqrt(4 * 1)
    assert matrix[1, 2] == pytest.approx(3.0)  # sqrt(1 * 9)


def test_time_decay_halves_a_context_one_half_life_older():
    day = 86400.0
    log = make_log([["a", "b"], ["c", "d"], ["e", "f"]], ordered=True,
                   times=[[0, 10], [day, day + 10], [2 * day, 2 * day + 10]])
    matrix = count_pairs(log, CooccurrenceConfig(window=1, time_decay_half_life="1d"))
    assert matrix[4, 5] == pytest.approx(1.0)  # newest
    assert matrix[2, 3] == pytest.approx(0.5)  # one half-life older
    assert matrix[0, 1] == pytest.approx(0.25)  # two half-lives older
    plain = count_pairs(log, CooccurrenceConfig(window=1))
    assert plain[0, 1] == plain[4, 5] == 1


def test_min_count_prunes_items_seen_in_few_contexts():
    log = make_log([["a", "b"], ["a", "c", "c"], ["a", "b"], ["d"]], ordered=False)
    np.testing.assert_array_equal(log.item_counts()[:4], [3, 2, 1, 1])
    np.testing.assert_array_equal(prune_rare_items(log, 2)[:4], [True, True, False, False])


def test_ppmi_known_values():
    matrix = sp.csr_matrix(np.array([[0, 2, 1], [2, 0, 1], [1, 1, 0]], dtype=np.float32))
    # total 8, marginals 3, 3, 2: PMI(a,b) = log(2*8/9), PMI(a,c) = log(1*8/6)
    got = ppmi(matrix, shift=1.0, smoothing=1.0).toarray()
    np.testing.assert_allclose(got[0, 1], np.log(16 / 9), rtol=1e-6)
    np.testing.assert_allclose(got[0, 2], np.log(4 / 3), rtol=1e-6)
    np.testing.assert_allclose(got, got.T, rtol=1e-6)
    shifted = ppmi(matrix, shift=2.0, smoothing=1.0).toarray()
    assert shifted[0, 1] == 0 and shifted[0, 2] == 0  # log(16/9) < log 2: clipped
    smoothed = ppmi(matrix, shift=1.0, smoothing=0.75).toarray()
    cols = np.array([3.0, 3.0, 2.0]) ** 0.75
    cols = cols / cols.sum() * 8
    np.testing.assert_allclose(smoothed[2, 0], np.log(1 * 8 / (2 * cols[0])), rtol=1e-5)


def test_empty_and_singleton_contexts_give_an_empty_matrix():
    log = make_log([["a"], ["b"], ["c"]], ordered=True)
    matrix = count_pairs(log, CooccurrenceConfig())
    assert matrix.shape == (6, 6) and matrix.nnz == 0


def test_ppmi_ignores_explicit_zeros(recwarn):
    block = np.ones((3, 3), dtype=np.float32) - np.eye(3, dtype=np.float32)
    matrix = sp.csr_matrix(sp.block_diag([block, block]))  # stores its diagonal zeros
    assert (matrix.data == 0).any()
    out = ppmi(matrix, smoothing=1.0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert out.nnz == 12 and np.isfinite(out.data).all()
