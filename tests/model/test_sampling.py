"""Samplers: draws follow the weights; pair draws only ever hit non-zero target entries."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from itemvec.model.sampling import DiscreteSampler, PairSampler, RowBatches, unigram_negatives


def chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = probabilities * counts.sum()
    nonzero = expected > 0
    return float((((counts - expected) ** 2)[nonzero] / expected[nonzero]).sum())


def test_discrete_sampler_frequencies_match_weights():
    weights = np.array([1.0, 0.0, 2.0, 7.0, 0.0, 10.0])
    sampler = DiscreteSampler(weights)
    draws = sampler.sample(np.random.default_rng(0), 200_000)
    counts = np.bincount(draws, minlength=len(weights))
    assert counts[1] == 0 and counts[4] == 0  # zero weight: never drawn
    # 3 degrees of freedom: the 99.9% quantile of chi-square is 16.3
    assert chi_square(counts, weights / weights.sum()) < 16.3
    np.testing.assert_allclose(sampler.probabilities, weights / weights.sum())


def test_discrete_sampler_last_index_and_bad_weights():
    sampler = DiscreteSampler(np.array([0.0, 0.0, 1.0]))
    assert set(sampler.sample(np.random.default_rng(1), 1000)) == {2}
    with pytest.raises(ValueError, match="positive weight"):
        DiscreteSampler(np.zeros(3))


def test_discrete_sampler_is_seeded():
    sampler = DiscreteSampler(np.arange(1, 11, dtype=float))
    a = sampler.sample(np.random.default_rng(5), 100)
    b = sampler.sample(np.random.default_rng(5), 100)
    np.testing.assert_array_equal(a, b)


def test_pair_sampler_draws_only_nonzeros_in_proportion():
    dense = np.array([[0, 3, 0, 1],
                      [3, 0, 0, 0],
                      [0, 0, 0, 6],
                      [1, 0, 6, 0]], dtype=np.float32)
    targets = sp.csr_matrix(dense)
    sampler = PairSampler(targets, batch_size=1000, pairs_per_epoch=50_000)
    assert len(sampler) == 50
    anchors, partners = map(np.concatenate, zip(*sampler.epoch(np.random.default_rng(0)),
                                               strict=True))
    assert len(anchors) == 50_000
    assert np.all(dense[anchors, partners] > 0)
    counts = np.zeros_like(dense)
    np.add.at(counts, (anchors, partners), 1)
    probabilities = dense / dense.sum()
    assert chi_square(counts[dense > 0], probabilities[dense > 0]) < 24.3  # 5 dof, 99.95%
    # the logQ term: how often each item is a partner
    np.testing.assert_allclose(sampler.partner_probability, dense.sum(axis=0) / dense.sum())


def test_row_batches_cover_every_nonempty_row_once_per_epoch():
    targets = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    rows = RowBatches(targets, batch_size=1)
    assert len(rows) == 2
    seen = np.concatenate(list(rows.epoch(np.random.default_rng(0))))
    assert sorted(seen.tolist()) == [0, 1]


def test_unigram_negatives_smooth_and_skip_unseen_items():
    mass = np.array([16.0, 1.0, 0.0])
    sampler = unigram_negatives(mass, power=0.5)
    np.testing.assert_allclose(sampler.probabilities, [0.8, 0.2, 0.0])
    draws = sampler.sample(np.random.default_rng(0), 10_000)
    assert 2 not in draws
