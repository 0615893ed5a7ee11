"""ItemEmbeddings queries on hand-made spaces where every answer is known."""

from __future__ import annotations

import inspect
import pydoc
from concurrent.futures import ThreadPoolExecutor

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
    batch_ids, batch_scores = space.similar_items_batch(["a", "d"], n=1)
    assert batch_ids.tolist() == [["b"], ["c"]] and batch_scores.shape == (2, 1)
    single_ids, single_scores = space.similar_items("a", n=10)
    np.testing.assert_allclose(space.similar_items_batch(["a"], n=4)[1][0], single_scores)


def test_batches_are_2d_and_padded_to_n(space):
    ids, scores = space.similar_items_batch(["a", "c"], n=6)  # only 4 other items exist
    assert ids.shape == scores.shape == (2, 6) and scores.dtype == np.float32
    assert ids[0].tolist() == ["b", "e", "c", "d", "", ""]
    assert np.isneginf(scores[:, 4:]).all() and np.isfinite(scores[:, :4]).all()
    ids, scores = space.recommend_batch([["a"], ["c", "e"]], n=4)
    assert ids.shape == scores.shape == (2, 4) and ids[1, 3] == "" and np.isneginf(scores[1, 3])
    empty_ids, empty_scores = space.similar_items_batch([], n=3)
    assert empty_ids.shape == empty_scores.shape == (0, 3)


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
        space.similar_items_batch(["a", "zzz"])
    with pytest.raises(KeyError, match="zzz"):
        space["zzz"]


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
    result = space.recommend(["nope", "a", "missing"], n=10)
    assert result.skipped == 2 and space.recommend(["a"]).skipped == 0
    assert result.ids.tolist() == space.recommend(["a"], n=10)[0].tolist()
    assert space.recommend_batch([["x", "a"], ["a"], ["y", "z"]], n=2).skipped.tolist() == [1, 0, 2]


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
    ids, scores = space.recommend_batch([["a"], ["c"], []], n=1)
    assert ids.tolist() == [["b"], ["e"], ["a"]]  # ties on empty: first index
    assert scores.shape == (3, 1)
    for history, row in zip([["a"], ["c"], []], ids, strict=True):
        assert row.tolist() == space.recommend(history, n=1)[0].tolist()


def test_single_and_batch_are_never_guessed():
    emb = ItemEmbeddings(["0", "5", "50", "7"], np.eye(4, dtype=np.float32))
    with pytest.raises(TypeError, match=r"wrap it in a list: \['50'\]"):
        emb.recommend("50")
    ids, _ = emb.recommend(["50"], n=3)
    assert "50" not in ids and ids.tolist() == ["0", "5", "7"]  # orthogonal: ties by index
    with pytest.raises(TypeError, match="wrap it in a list"):
        emb.recommend(50)
    with pytest.raises(TypeError, match="histories\\[0\\]"):
        emb.recommend_batch(["50", "7"])  # one flat history is not a batch
    with pytest.raises(TypeError, match="_batch"):
        emb.similar_items(["5", "7"])
    with pytest.raises(TypeError, match="_batch"):
        emb.recommend([["5"], ["7"]])
    with pytest.raises(TypeError, match="items"):
        emb.similar_items_batch("57")


def test_integer_ids_accepted_when_training_ids_were_integers():
    emb = ItemEmbeddings(["1", "2", "3", "-4"], np.eye(4, dtype=np.float32))
    assert emb.integer_ids and 1 in emb and np.int64(-4) in emb and 9 not in emb
    np.testing.assert_array_equal(emb[np.int32(2)], emb["2"])
    ids, _ = emb.recommend([1, np.int64(2)], n=5, exclude=[3])
    assert ids.tolist() == ["-4"]  # returned ids stay strings
    assert emb.similar_items(1, n=5, filter=[2, "3"])[0].tolist() == ["2", "3"]
    batch = emb.similar_items_batch(np.array([1, 2]), n=1)[0]
    similar = emb.most_similar(positive=[1], negative=[2], n=1)[0]
    assert all(type(i) is str for i in [*batch.ravel(), *similar])  # str objects, not ints
    with pytest.raises(TypeError):
        emb[True]  # a bool is not an id


@pytest.mark.parametrize("ids", [["a", "b"], ["007", "1"], ["-0", "1"], ["1", "+2"], ["1", "2.0"],
                                 ["1\n2", "3"], ["1", ""]])
def test_integer_ids_refused_when_training_ids_were_not(ids):
    emb = ItemEmbeddings(ids, np.eye(2, dtype=np.float32))
    assert not emb.integer_ids
    for call in (lambda: emb[1], lambda: 1 in emb, lambda: emb.similar_items(7),
                 lambda: emb.recommend([1]), lambda: emb.similar_items_batch([1])):
        with pytest.raises(TypeError, match="ids are strings"):
            call()


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_n_must_be_a_positive_integer(space, n):
    for call in (lambda: space.similar_items("a", n=n), lambda: space.recommend(["a"], n=n),
                 lambda: space.similar_items_batch(["a"], n=n),
                 lambda: space.recommend_batch([["a"]], n=n),
                 lambda: space.most_similar(positive=["a"], n=n),
                 lambda: space.similar_to_vector(np.ones(2), n=n)):
        with pytest.raises(ValueError, match=f"n must be a positive integer.*got {n!r}"):
            call()


def test_getitem_contains_len_iter(space):
    np.testing.assert_array_equal(space["c"], space.vectors[2])
    assert space["c"].dtype == np.float32 and space["c"].shape == (2,)
    space["c"][:] = 9  # a copy: the model is not changed through it
    assert space.vectors[2, 0] == 0
    assert "e" in space and "x" not in space and len(space) == 5
    assert list(space) == space.item_ids.tolist() == list(POINTS)
    with pytest.raises(TypeError, match="one item id"):
        space[["a", "b"]]


def planted_analogies(seed: int = 0) -> ItemEmbeddings:
    """Four groups on two planted axes, royal/common x male/female, five items each."""
    rng = np.random.default_rng(seed)
    axes = {"r": 0, "c": 1, "m": 2, "f": 3}
    ids, rows = [], []
    for status in "rc":
        for sex in "mf":
            for k in range(5):
                row = rng.normal(0, 0.05, 8)
                row[axes[status]] += 1
                row[axes[sex]] += 1
                ids.append(f"{status}{sex}{k}")
                rows.append(row / np.linalg.norm(row))
    return ItemEmbeddings(ids, np.asarray(rows, dtype=np.float32))


def test_most_similar_follows_planted_groups():
    emb = planted_analogies()
    ids, scores = emb.most_similar(positive=["rm0"], n=4)
    assert sorted(ids) == ["rm1", "rm2", "rm3", "rm4"]
    ids, _ = emb.most_similar(positive=["rm0", "cf0"], negative=["cm0"], n=5)  # king - man + woman
    assert sorted(ids) == ["rf0", "rf1", "rf2", "rf3", "rf4"]
    ids, _ = emb.most_similar(positive=["rm0", "rm1"], negative=["cm0"], n=5)  # royal, not common
    assert all(i.startswith("r") for i in ids)
    query = emb["rm0"] + emb["cf0"] - emb["cm0"]
    ids, scores = emb.most_similar(positive=["rm0", "cf0"], negative=["cm0"], n=20)
    assert not {"rm0", "cf0", "cm0"} & set(ids) and len(ids) == 17  # inputs left out
    np.testing.assert_allclose(scores, emb.vectors[emb.indices(ids)] @ query
                               / np.linalg.norm(query), atol=1e-5)


def test_most_similar_needs_ids_in_lists():
    emb = planted_analogies()
    with pytest.raises(ValueError, match="at least one"):
        emb.most_similar(n=3)
    with pytest.raises(TypeError, match="positive must be a list"):
        emb.most_similar("rm0")
    with pytest.raises(UnknownItemError, match="'nope'"):
        emb.most_similar(positive=["rm0"], negative=["nope"])


def test_concurrent_queries_match_serial_and_leave_no_state():
    emb = planted_analogies()
    before = dict(vars(emb))
    rng = np.random.default_rng(1)
    jobs = [list(rng.choice(emb.item_ids, size=rng.integers(0, 4))) + ["unknown"] * (i % 2)
            for i in range(200)]

    def answer(i: int):
        history = jobs[i]
        if i % 3 == 0:
            return emb.recommend(history, n=5).skipped, emb.recommend(history, n=5).ids.tolist()
        if i % 3 == 1:
            return emb.recommend_batch([history, ["rm0"]], n=3).skipped.tolist(), None
        return emb.similar_items(emb.item_ids[i % len(emb)], n=4, exclude=history)[0].tolist()

    serial = [answer(i) for i in range(len(jobs))]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(answer, range(len(jobs))))
    assert threaded == serial
    assert vars(emb).keys() == before.keys()
    assert all(vars(emb)[k] is v for k, v in before.items())


def test_every_public_method_has_help():
    public = [name for name, _ in inspect.getmembers(ItemEmbeddings)
              if not name.startswith("_") or name in ("__getitem__", "__contains__", "__len__",
                                                       "__iter__")]
    assert {"similar_items", "most_similar", "recommend_batch", "__getitem__"} <= set(public)
    for name in public:
        doc = inspect.getdoc(getattr(ItemEmbeddings, name))
        assert doc, name
        shown = pydoc.render_doc(getattr(ItemEmbeddings, name), renderer=pydoc.plaintext)
        assert doc.splitlines()[0] in shown, name  # what help() prints


def test_filter_mask_must_cover_every_item(space):
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        space.similar_items("a", filter=np.ones(3, dtype=bool))


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
    assert space.row("e") == 4 and space.indices(["d", "a"]).tolist() == [3, 0]
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


# -- cold items (features only) in similar ---------------------------------------------------------
def cold_model(offset: float | None) -> ItemEmbeddings:
    """Warm a, b; cold c (cosine 0.99 to a) and d (cosine 0 to a)."""
    vectors = np.array([[1, 0], [0.8, 0.6], [0.99, np.sqrt(1 - 0.99 ** 2)], [0, 1]], np.float32)
    return ItemEmbeddings(["a", "b", "c", "d"], vectors, n_warm=2,
                          query=QueryConfig(cold_similarity_offset=offset))


@pytest.mark.parametrize("index", [None, "exact"])
def test_cold_items_carry_the_similarity_offset(index):
    emb = cold_model(-0.3).use_index(index)
    got = emb.similar_items("a", n=3)  # calibrated: c's cosine 0.99 - 0.3 falls below b's 0.8
    assert got.ids.tolist() == ["b", "c", "d"] and got.cold.tolist() == [False, True, True]
    np.testing.assert_allclose(got.scores, [0.8, 0.69, -0.3], atol=1e-6)
    got = emb.similar_items("a", n=3, cold="include")
    assert got.ids.tolist() == ["c", "b", "d"] and got.cold.tolist() == [True, False, True]
    np.testing.assert_allclose(got.scores, [0.99, 0.8, 0.0], atol=1e-6)
    got = emb.similar_items("a", n=3, cold="exclude")
    assert got.ids.tolist() == ["b"] and got.cold.tolist() == [False]
    batch = emb.similar_items_batch(["a", "c"], n=2)
    assert batch.ids.tolist() == [["b", "c"], ["a", "b"]]
    assert batch.cold.tolist() == [[False, True], [False, False]]


def test_uncalibrated_cold_items_rank_below_every_warm_item():
    got = cold_model(None).similar_items("b", n=3)
    assert got.ids.tolist() == ["a", "c", "d"]
    assert got.scores[1] < -0.9  # cosine - 2: after any warm item, still before padding


def test_cold_flags_in_recommendations_and_after_a_round_trip(tmp_path):
    emb = cold_model(-0.3)
    result = emb.recommend(["a"], n=3)
    assert result.cold.tolist() == [i in ("c", "d") for i in result.ids]
    emb.save(tmp_path / "bundle")
    loaded = ItemEmbeddings.load(tmp_path / "bundle")
    assert loaded.n_warm == 2 and loaded.query.cold_similarity_offset == -0.3
    assert loaded.similar_items("a", n=3).ids.tolist() == ["b", "c", "d"]
    with pytest.raises(ValueError, match="cold must be one of"):
        emb.similar_items("a", cold="maybe")
