"""ItemEmbeddings queries on a hand-made 2-D space where every answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from itemvec.config import QueryConfig
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ItemvecError, UnknownItemError
from itemvec.util.topk import top_k

# a and b point the same way, e sits between a and c, d is opposite a.
POINTS = {"a": (1.0, 0.0), "b": (0.9, 0.1), "c": (0.0, 1.0), "d": (-1.0, 0.0), "e": (0.7, 0.7)}


@pytest.fixture
def space() -> ItemEmbeddings:
    vectors = np.array(list(POINTS.values()), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ItemEmbeddings(list(POINTS), vectors, item_bias=np.zeros(5), temperature=1.0,
                          query=QueryConfig(recency_half_life=0.01, popularity_weight=1.0))


def test_similar_items_single_is_ordered_by_cosine(space):
    ids, scores = space.similar_items("a", n=10)
    assert ids.tolist() == ["b", "e", "c", "d"]  # never the query itself
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores[[1, 2, 3]], [np.sqrt(0.5), 0.0, -1.0], atol=1e-6)


def test_similar_items_top_n_and_batch(space):
    ids, scores = space.similar_items("c", n=2)
    assert ids.tolist() == ["e", "b"]
    batch_ids, batch_scores = space.similar_items(["a", "d"], n=1)
    assert [row.tolist() for row in batch_ids] == [["b"], ["c"]]
    assert len(batch_scores) == 2 and batch_scores[0].shape == (1,)


def test_similar_items_filter_and_exclude(space):
    ids, _ = space.similar_items("a", n=10, filter=["c", "d", "unknown"])
    assert ids.tolist() == ["c", "d"]
    ids, _ = space.similar_items("a", n=10, exclude=["b", "e"])
    assert ids.tolist() == ["c", "d"]
    mask = np.array([True, False, True, True, False])  # a, c, d allowed
    ids, _ = space.similar_items("a", n=10, filter=mask)
    assert ids.tolist() == ["c", "d"]


def test_unknown_item_names_it(space):
    with pytest.raises(UnknownItemError) as info:
        space.similar_items("zzz")
    assert "unknown item 'zzz'" in str(info.value)
    assert isinstance(info.value, ItemvecError) and info.value.exit_code == 2
    with pytest.raises(UnknownItemError):
        space.similar_items(["a", "zzz"])


def test_recommend_excludes_history_and_weights_recent_items(space):
    ids, scores = space.recommend(["c", "a"], n=10)  # tiny half-life: the newest item decides
    assert ids.tolist() == ["b", "e", "d"]
    assert "a" not in ids and "c" not in ids
    assert np.all(np.diff(scores) <= 0)
    mean = space.with_query(recency_half_life=0)  # plain mean of a and c points at e
    assert mean.recommend(["c", "a"], n=1)[0].tolist() == ["e"]
    assert space.query.recency_half_life == 0.01  # with_query is a view, not a mutation


def test_recommend_can_keep_seen_items(space):
    ids, _ = space.recommend(["a"], n=2, filter_seen=False)
    assert ids.tolist() == ["a", "b"]


def test_recommend_skips_unknown_history_items(space):
    ids, _ = space.recommend(["nope", "a", "missing"], n=10)
    assert space.last_skipped == 2
    assert ids.tolist() == space.recommend(["a"], n=10)[0].tolist()


def test_empty_history_falls_back_to_popularity(space):
    popular = ItemEmbeddings(space.item_ids, space.vectors, item_bias=np.array([0, 1, 5, 2, 3]))
    ids, scores = popular.recommend([], n=3)
    assert ids.tolist() == ["c", "e", "d"]
    np.testing.assert_allclose(scores, [5, 3, 2])
    only_unknown, _ = popular.recommend(["x"], n=1)
    assert only_unknown.tolist() == ["c"]


def test_popularity_weight_scales_the_learned_prior(space):
    biased = ItemEmbeddings(space.item_ids, space.vectors, item_bias=np.array([0, 0, 0, 5, 0]),
                            query=QueryConfig(recency_half_life=0.01))
    assert biased.recommend(["a"], n=1)[0].tolist() == ["d"]
    assert biased.with_query(popularity_weight=0).recommend(["a"], n=1)[0].tolist() == ["b"]


def test_recommend_batch(space):
    ids, scores = space.recommend([["a"], ["c"], []], n=1)
    assert [row.tolist() for row in ids] == [["b"], ["e"], ["a"]]  # ties on empty: first index
    assert len(scores) == 3


def test_recommend_single_history_of_non_string_ids():
    numeric = ItemEmbeddings(["1", "2", "3"], np.eye(3, dtype=np.float32))
    ids, _ = numeric.recommend([1, 2], n=5)
    assert ids.tolist() == ["3"]


def test_similar_to_vector_normalises(space):
    ids, scores = space.similar_to_vector(np.array([10.0, 10.0]), n=1)
    assert ids.tolist() == ["e"] and scores[0] == pytest.approx(1.0, abs=1e-6)


def test_top_k_orders_and_drops_non_finite():
    scores = np.array([0.1, np.inf * -1, 0.5, 0.3, -np.inf, 0.5])
    np.testing.assert_array_equal(top_k(scores, 3), [2, 5, 3])  # ties keep index order
    np.testing.assert_array_equal(top_k(scores, 10), [2, 5, 3, 0])
    assert len(top_k(np.full(3, -np.inf), 2)) == 0


def test_lookup_helpers(space):
    assert "a" in space and "zzz" not in space and len(space) == 5 and space.dim == 2
    known, unknown = space.known(["e", "x", "a"])
    assert known.tolist() == [4, 0] and unknown == 1
    np.testing.assert_allclose(space.vector("c"), [0, 1])
    with pytest.raises(ValueError, match="2 item ids but 5 vectors"):
        ItemEmbeddings(["a", "b"], space.vectors)


def test_trained_model_neighbours_share_a_category(trained, categories):
    """On the planted shop the single most popular item's neighbours are its category."""
    item = str(trained.embeddings.item_ids[0])
    ids, _ = trained.embeddings.similar_items(item, n=5)
    assert sum(categories[i] == categories[item] for i in ids) >= 4


def test_history_weights_grow_with_effective_history_length():
    vectors = np.eye(4, dtype=np.float32)
    emb = ItemEmbeddings(["a", "b", "c", "d"], vectors, query=QueryConfig(
        recency_half_life=0, evidence_power=0.5))
    # plain mean over 4 items (0.25 each) times 4 ** 0.5
    np.testing.assert_allclose(emb.history_weights(4), [0.5, 0.5, 0.5, 0.5], rtol=1e-6)
    single = emb.history_weights(1)
    np.testing.assert_allclose(single, [1.0])  # one item: no extra evidence, i2i unchanged
    flat = emb.with_query(evidence_power=0.0)
    np.testing.assert_allclose(flat.history_weights(4).sum(), 1.0, rtol=1e-6)
