"""Exact recommendation top-n (``query.exact``): a query's answer is the same bits alone or in
any batch, equals a brute-force ranking, and honours filters, seen items and ties."""

from __future__ import annotations

import numpy as np
import pytest

from itemvec.query import exact
from itemvec.query.embeddings import ItemEmbeddings


def catalogue(n: int = 5000, dim: int = 24, seed: int = 0) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bias = rng.normal(scale=0.5, size=n).astype(np.float32)
    return ItemEmbeddings([f"i{i}" for i in range(n)], vectors, bias, temperature=0.1)


def histories(emb: ItemEmbeddings, count: int, seed: int = 1) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[f"i{j}" for j in rng.integers(len(emb), size=rng.integers(0, 7))]
            for _ in range(count)]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Several item blocks and a ragged last chunk even on a small catalogue."""
    monkeypatch.setattr(exact, "BLOCK_ITEMS", 1024)


def test_a_query_gets_the_same_bits_alone_and_in_any_batch():
    emb = catalogue()
    many = histories(emb, 40)
    alone = [emb.recommend(h, n=10) for h in many]
    together = emb.recommend_batch(many, n=10)
    reversed_ = emb.recommend_batch(many[::-1], n=10)
    for i, single in enumerate(alone):
        assert list(single.ids) == list(together.ids[i]) == list(reversed_.ids[-1 - i])
        assert single.scores.tobytes() == together.scores[i].tobytes()
        assert single.scores.tobytes() == reversed_.scores[-1 - i].tobytes()


def test_top_n_equals_a_brute_force_ranking():
    emb = catalogue()
    for history in histories(emb, 30, seed=3):
        result = emb.recommend(history, n=15)
        rows = emb.known(history)[0]
        logits = emb.score_histories([rows])[0].astype(np.float64)
        logits[rows] = -np.inf
        expected = np.argsort(-logits, kind="stable")[:15]
        assert list(emb.indices(result.ids)) == list(expected)
        np.testing.assert_allclose(result.scores, logits[expected], rtol=1e-5, atol=1e-5)


def test_filters_seen_and_short_answers():
    emb = catalogue(n=3000)
    allowed = np.zeros(len(emb), dtype=bool)
    allowed[[5, 700, 1500, 2999]] = True
    ids, scores = emb.recommend(["i5", "i9"], n=10, filter=allowed)
    assert sorted(ids) == ["i1500", "i2999", "i700"]  # i5 is seen; only three remain
    assert np.all(np.diff(scores) <= 0)
    ids, _ = emb.recommend(["i5"], n=5, filter_seen=False, exclude=["i1"])
    assert "i1" not in ids and len(ids) == 5


def test_ties_go_to_the_lower_row():
    vectors = np.tile(np.eye(4, dtype=np.float32), (50, 1))  # rows 0, 4, 8, ... are equal
    emb = ItemEmbeddings([f"i{i}" for i in range(len(vectors))], vectors, temperature=1.0)
    rows, logits = exact.logit_top(emb.vectors, emb.item_bias, 0.0,
                                   np.array([[1, 0, 0, 0]], np.float32), 3, None,
                                   [np.zeros(0, np.int64)])
    assert list(rows[0]) == [0, 4, 8] and list(logits[0]) == [1.0, 1.0, 1.0]


def test_the_norm_bound_is_kept_per_array_and_forgotten_with_it():
    vectors = np.full((10, 3), 2.0, dtype=np.float32)
    assert exact.largest_norm(vectors) == pytest.approx(np.sqrt(12), rel=1e-4)
    key = id(vectors)
    assert key in exact._NORMS
    del vectors
    assert key not in exact._NORMS


@pytest.mark.parametrize("dim", [8, 64, 100])
def test_the_fixed_kernel_scores_a_row_the_same_among_any_rows(dim):
    rng = np.random.default_rng(dim)
    vectors = rng.normal(size=(3000, dim)).astype(np.float32)
    bias = rng.normal(size=3000).astype(np.float32)
    query = rng.normal(size=dim).astype(np.float32)
    weight = np.float32(0.7)
    everything = exact.fixed_logits(vectors, bias, weight, query, np.arange(3000))
    for size in (1, 2, 5, 64, 999):
        rows = rng.choice(3000, size=size, replace=False)
        some = exact.fixed_logits(vectors, bias, weight, query, rows)
        assert some.tobytes() == everything[rows].tobytes()


def test_a_compact_model_ranks_as_its_expansion_without_expanding():
    """Items sharing a stored row (a compact catalogue) get the expanded model's answers, and
    recommending never builds the one-row-per-item matrix."""
    rng = np.random.default_rng(3)
    stored = rng.normal(size=(700, 24)).astype(np.float32)
    rows = np.concatenate([np.arange(700), rng.integers(0, 700, size=4300)]).astype(np.int32)
    bias = rng.normal(scale=0.5, size=len(rows)).astype(np.float32)
    ids = [f"i{i}" for i in range(len(rows))]
    compact = ItemEmbeddings(ids, stored, bias, temperature=0.1, vector_rows=rows)
    expanded = ItemEmbeddings(ids, stored[rows], bias, temperature=0.1)
    many = histories(expanded, 30)
    for got, want in zip(compact.recommend_many(many, n=10), expanded.recommend_many(many, n=10),
                         strict=True):
        assert list(got.ids) == list(want.ids)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert compact.__dict__["_expanded"] is None


def test_non_finite_logits_are_never_returned_and_hide_no_other_item():
    """As ``top_k`` ranks a full score row: NaN, +inf and -inf logits are dropped, and a chunk
    holding one keeps its other items (its maximum must not turn NaN or +inf)."""
    emb = catalogue(n=3000, dim=8)
    bias = emb.item_bias.copy()
    bias[5], bias[700], bias[1500:1510] = np.nan, np.inf, -np.inf
    emb = ItemEmbeddings(emb.item_ids, emb.vectors, bias, temperature=0.1)
    for history in (["i100"], [], ["i3", "i900"]):
        logits = emb.score_histories([emb.indices(history)])[0].astype(np.float64)
        logits[emb.indices(history)] = -np.inf
        finite = np.flatnonzero(np.isfinite(logits))
        expected = finite[np.argsort(-logits[finite], kind="stable")]
        got = emb.recommend(history, n=20)
        assert list(got.ids) == [emb.item_ids[r] for r in expected[:20]]
        everything = emb.recommend(history, n=3000)
        assert np.isfinite(everything.scores).all() and len(everything.ids) == len(finite)
    tiny = ItemEmbeddings(["a", "b", "c"], np.eye(3, 2, dtype=np.float32),
                          np.array([0.0, -np.inf, np.nan], np.float32), temperature=0.1)
    assert list(tiny.recommend([], n=3).ids) == ["a"]


def test_no_histories_is_an_empty_answer():
    emb = catalogue(n=300)
    ids, scores = emb.recommend_batch([], n=4)
    assert ids.shape == scores.shape == (0, 4)
    assert emb.recommend_many([], n=4) == []


def test_a_block_of_fixed_logits_has_the_bits_of_each_query_alone():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(500, 24)).astype(np.float32)
    bias = rng.normal(size=500).astype(np.float32)
    queries = (7 * rng.normal(size=(5, 24))).astype(np.float32)
    rows = rng.integers(500, size=(5, 40))
    block = exact.fixed_logits_block(vectors, bias, np.float32(0.8), queries, rows)
    for query, row, values in zip(queries, rows, block, strict=True):
        alone = exact.fixed_logits(vectors, bias, np.float32(0.8), query, row)
        assert values.tobytes() == alone.tobytes()


def test_top_positions_rows_equal_top_positions_of_each_row():
    """The batched ranking picks the same positions as one row at a time, ties by position,
    never a non-finite value, short rows where fewer values are finite."""
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 4, size=(40, 25)).astype(np.float32)  # many ties
    values[rng.random(values.shape) < 0.2] = -np.inf
    values[rng.random(values.shape) < 0.05] = np.nan
    values[rng.random(values.shape) < 0.05] = np.inf
    values[3] = -np.inf  # nothing to return
    for n in (1, 5, 25, 30):
        got = exact.top_positions_rows(values, n)
        for row, positions in zip(values, got, strict=True):
            assert positions.tolist() == exact.top_positions(row, n).tolist()
    assert exact.top_positions_rows(np.zeros((2, 0), np.float32), 3)[1].tolist() == []
