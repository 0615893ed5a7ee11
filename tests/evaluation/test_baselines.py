"""Baselines: popularity and item-kNN on a tiny matrix with hand-computed scores; EASE,
item2vec and ALS against popularity on a generated shop with planted categories."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from itemvec.config import IngestConfig
from itemvec.data.ingest import log_from_frame
from itemvec.data.synth import generate
from itemvec.evaluation.baselines import Contexts, build_baseline, check_baselines, ease_weights
from itemvec.evaluation.protocol import (
    build_queries,
    metrics_from_ranks,
    split_contexts,
    target_ranks,
)
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


# -- baselines fit on the training contexts, on a generated shop with planted categories -------
@pytest.fixture(scope="module")
def planted():
    """Train contexts and held-out next-item queries of a small shop (80/20 by time)."""
    shop = generate(10_000, 300, n_categories=15, seed=3)
    log = log_from_frame(shop.events, IngestConfig(context="session_id", item="item_id",
                                                   time="ts"), Path("<synth>"), 0)
    split = split_contexts(log, valid=0.0, test=0.2, seed=0)
    train, test = log.subset(np.sort(split.train)), log.subset(np.sort(split.test))
    identity = np.arange(log.n_items)
    contexts = Contexts.from_log(train, identity, log.n_items)
    queries = build_queries(test, identity, "s2i", seed=0)
    counts = train.item_counts()
    cooccurrence = sp.csr_matrix((log.n_items, log.n_items), dtype=np.float32)
    return contexts, queries, counts, cooccurrence


def hit_rate(name, planted, **params) -> float:
    contexts, queries, counts, cooccurrence = planted
    scorer = build_baseline(name, cooccurrence, counts, contexts=contexts, **params)
    return metrics_from_ranks(target_ranks(scorer, queries), 10)["HR@10"]


def test_contexts_map_items_and_drop_unknown_ones():
    log = log_from_frame(pl.DataFrame({"s": ["a", "a", "a", "b", "b"],
                                       "i": ["x", "y", "z", "z", "x"]}),
                         IngestConfig(context="s", item="i"), Path("<t>"), 0)
    to_model = np.full(log.n_items, -1)
    to_model[list(log.item_ids).index("y")], to_model[list(log.item_ids).index("z")] = 0, 1
    contexts = Contexts.from_log(log, to_model, 2)
    assert contexts.indptr.tolist() == [0, 2, 3] and contexts.items.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(contexts.matrix().toarray(), [[1, 1], [0, 1]])


def test_ease_weights_solve_the_ridge_regression_with_a_zero_diagonal():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], np.float32))
    weights = ease_weights(x, 2.0)
    gram = x.T @ x
    precision = np.linalg.inv(gram.toarray() + 2.0 * np.eye(3))
    want = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(weights, want, rtol=1e-5, atol=1e-6)
    wide = sp.csr_matrix(x.toarray()[:2])  # fewer contexts than items: the Woodbury route
    gram = wide.T @ wide
    precision = np.linalg.inv(gram.toarray() + 2.0 * np.eye(3))
    want = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(want, 0.0)
    np.testing.assert_allclose(ease_weights(wide, 2.0), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["ease", "item2vec", "als"])
def test_fitted_baselines_find_the_planted_categories(name, planted):
    if name != "ease":
        pytest.importorskip({"item2vec": "gensim", "als": "implicit"}[name])
    popularity = hit_rate("popularity", planted)
    assert hit_rate(name, planted) > 2 * popularity  # 0.135; ease 0.61, item2vec 0.38, als 0.47


def test_fitted_baselines_need_the_contexts_and_name_the_extra(monkeypatch):
    with pytest.raises(ConfigError, match="'ease' fits on the training contexts"):
        build_baseline("ease", MATRIX, COUNTS)
    contexts = Contexts(np.array([0, 2]), np.array([0, 1]), 3)
    for name, module in (("item2vec", "gensim.models"), ("als", "implicit.cpu.als")):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(ConfigError, match=rf"'{name}' needs .*pip install 'itemvec\[bench\]'"):
            build_baseline(name, MATRIX, COUNTS, contexts=contexts)


def test_baselines_are_checked_before_any_training(monkeypatch):
    check_baselines(["popularity", "itemknn", "ease"])
    with pytest.raises(ConfigError, match="unknown baseline 'bpr'"):
        check_baselines(["ease", "bpr"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"'als' needs implicit: pip install 'itemvec\[bench\]'"):
        check_baselines(["als"])
