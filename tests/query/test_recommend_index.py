"""The recommendation index: recall against the exact logit ranking, filters, the same bits
alone and in a batch, storage (plain, memory-mapped, stale, damaged) and its fallbacks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import itemvec.query.embeddings as embeddings_module
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.recommend_index import (
    build_recommend_index,
    load_recommend_index,
    sampled_histories,
    save_recommend_index,
)
from itemvec.store.bundle import write_bundle

pytest.importorskip("faiss")

N, DIM = 12_000, 24


def planted_model(n: int = N, seed: int = 0) -> ItemEmbeddings:
    """Clustered unit vectors and a skewed popularity bias, as a trained model has."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(80, DIM))
    vectors = centres[rng.integers(80, size=n)] + 0.7 * rng.normal(size=(n, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    bias = rng.gumbel(scale=0.3, size=n).astype(np.float32)
    return ItemEmbeddings([f"i{i}" for i in range(n)], vectors, bias, temperature=0.1)


def build(model: ItemEmbeddings, **params):
    return build_recommend_index(model.vectors, model.item_bias, model.temperature,
                                 model.query.popularity_weight, model.pool, **params)


@pytest.fixture(scope="module")
def model() -> ItemEmbeddings:
    return planted_model()


@pytest.fixture(scope="module")
def index(model):
    return build(model)


@pytest.fixture(scope="module")
def histories(model) -> list[np.ndarray]:
    return sampled_histories(len(model), seed=7, count=120)


def test_recall_at_10_against_exact(model, index, histories):
    pooled = model.pool(histories)
    assert index.recall(pooled, histories) >= 0.98
    assert index.params["popular"] == 1000
    rows, logits = index.search(pooled, 10, None, histories)
    exact_rows, exact_logits = model.top_logits(pooled, 10, None, histories)
    same = 0
    for got, values, want, want_values in zip(rows, logits, exact_rows, exact_logits,
                                              strict=True):
        common, at_got, at_want = np.intersect1d(got, want, return_indices=True)
        assert values[at_got].tobytes() == want_values[at_want].tobytes()  # the exact bits
        same += len(common)
    assert same / (10 * len(rows)) >= 0.98


def test_nprobe_is_the_smallest_reaching_the_target(model, index):
    """The popular items alone miss most of the answer here: the lists do the work, and one
    list fewer than tuned falls short of the target on the tuning histories."""
    nprobe = index.params["nprobe"]
    assert 4 <= nprobe < index.params["nlist"]
    tuning = sampled_histories(len(model), seed=0)
    pooled = model.pool(tuning)
    assert index.recall(pooled, tuning, nprobe - 1) < 0.99 <= index.recall(pooled, tuning)


def test_seen_items_are_never_returned(model, index, histories):
    rows, _ = index.search(model.pool(histories), 20, None, histories)
    for history, found in zip(histories, rows, strict=True):
        assert len(found) == 20 and not set(history) & set(found)


def test_long_and_short_histories_leave_out_seen_items_alike(model, index, monkeypatch):
    """Seen items are matched by one broadcast for short histories and by a binary search per
    query for long ones: the same answers either way, never a seen item, even when the
    history is the query's own best items."""
    import itemvec.query.recommend_index as module

    rng = np.random.default_rng(5)
    pooled_from = sampled_histories(len(model), seed=9, count=40)
    pooled = model.pool(pooled_from)
    best, _ = index.search(pooled, 60, None, [np.zeros(0, np.int64)] * len(pooled))
    seen = [np.concatenate([b[:20], rng.choice(len(model), size=int(rng.integers(0, 30)))])
            for b in best]  # 20-50 rows: the top 20 themselves among them
    answers = []
    for broadcast in (0, 1000):
        monkeypatch.setattr(module, "SEEN_BROADCAST", broadcast)
        rows, logits = index.search(pooled, 10, None, seen)
        answers.append((rows, logits))
        for history, found in zip(seen, rows, strict=True):
            assert len(found) == 10 and not set(history.tolist()) & set(found.tolist())
    (rows_a, logits_a), (rows_b, logits_b) = answers
    assert [r.tolist() for r in rows_a] == [r.tolist() for r in rows_b]
    assert [v.tobytes() for v in logits_a] == [v.tobytes() for v in logits_b]


def test_a_popular_item_far_from_every_query_is_found_when_its_bias_lifts_it(model):
    """Popular items join the candidates when their logit can reach the IVF rows' n-th best:
    one lifted far above every other logit is first for every history, as exact ranks it."""
    bias = model.item_bias.copy()
    lifted = int(np.argmax(bias))
    bias[lifted] += 40.0  # far above any q . v / T (|q . v| / T <= |q| / 0.1)
    lifted_model = ItemEmbeddings(model.item_ids, model.vectors, bias, model.temperature)
    built = build(lifted_model)
    histories = sampled_histories(len(model), seed=11, count=30)
    rows, logits = built.search(lifted_model.pool(histories), 10, None, histories)
    exact_rows, exact_logits = lifted_model.top_logits(lifted_model.pool(histories), 10, None,
                                                       histories)
    for found, want, history in zip(rows, exact_rows, histories, strict=True):
        assert found[0] == want[0] == lifted or lifted in history
    assert np.mean([np.sum(f >= w[-1] - 1e-4) / 10 for f, w in
                    zip(logits, exact_logits, strict=True)]) >= 0.95


def test_blocked_rows_never_returned_and_a_selective_filter_is_exact(model, index, histories):
    pooled = model.pool(histories[:30])
    blocked = np.arange(len(model)) % 3 == 0  # a third blocked: fetched around
    rows, _ = index.search(pooled, 10, blocked, histories[:30])
    assert all(len(r) == 10 and not blocked[r].any() for r in rows)
    selective = np.ones(len(model), dtype=bool)
    selective[::80] = False  # 1.25% allowed: the exact scan
    rows, logits = index.search(pooled, 10, selective, histories[:30])
    exact_rows, exact_logits = model.top_logits(pooled, 10, selective, histories[:30])
    for got, values, want, want_values in zip(rows, logits, exact_rows, exact_logits,
                                              strict=True):
        assert np.array_equal(got, want) and values.tobytes() == want_values.tobytes()


def test_an_empty_history_ranks_by_popularity_as_exact_does(model, index):
    pooled = model.pool([np.zeros(0, np.int64)])
    rows, logits = index.search(pooled, 15, None, [np.zeros(0, np.int64)])
    exact_rows, exact_logits = model.top_logits(pooled, 15, None, [np.zeros(0, np.int64)])
    assert np.array_equal(rows[0], exact_rows[0])
    assert logits[0].tobytes() == exact_logits[0].tobytes()


def test_a_query_gets_the_same_bits_alone_and_in_a_batch(model, index, histories):
    batch = histories[:40]
    rows, logits = index.search(model.pool(batch), 10, None, batch)
    for h, history in enumerate(batch):
        alone_rows, alone_logits = index.search(model.pool([history]), 10, None, [history])
        assert np.array_equal(alone_rows[0], rows[h])
        assert alone_logits[0].tobytes() == logits[h].tobytes()


def test_many_results_fall_back_to_the_exact_scan(model, index, histories):
    pooled = model.pool(histories[:3])
    rows, logits = index.search(pooled, 250, None, histories[:3])
    exact_rows, _ = model.top_logits(pooled, 250, None, histories[:3])
    assert all(np.array_equal(a, b) for a, b in zip(rows, exact_rows, strict=True))


@pytest.fixture()
def bundle(model, tmp_path) -> Path:
    return write_bundle(tmp_path / "model", model, config={}, stats={})


def load(model, bundle, **kwargs):
    return load_recommend_index(bundle, model.vectors, model.item_bias, model.temperature,
                                model.query.popularity_weight, model.pool, **kwargs)


def test_stored_index_loads_plain_and_memory_mapped_with_the_same_answers(model, index,
                                                                          bundle, histories,
                                                                          monkeypatch):
    save_recommend_index(index, bundle)
    meta = json.loads((bundle / "index-recommend.json").read_text())
    assert meta["params"]["nprobe"] == index.params["nprobe"] and meta["temperature"] == 0.1
    monkeypatch.setattr("itemvec.query.recommend_index.build_recommend_index",
                        lambda *a, **k: pytest.fail("rebuilt a fresh stored index"))
    pooled = model.pool(histories[:20])
    want = index.search(pooled, 10, None, histories[:20])
    for mmap in (False, True):
        loaded = load(model, bundle, mmap=mmap)
        assert loaded.params == index.params
        got = loaded.search(pooled, 10, None, histories[:20])
        assert all(np.array_equal(a, b) for a, b in zip(got[0], want[0], strict=True))
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got[1], want[1], strict=True))
    assert str(bundle / "index-recommend.faiss") in Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("change", ["bias", "vectors"])
def test_a_stale_stored_index_is_rebuilt(model, index, bundle, change, caplog, tmp_path):
    save_recommend_index(index, bundle)
    if change == "bias":
        changed = ItemEmbeddings(model.item_ids, model.vectors, model.item_bias[::-1].copy(),
                                 model.temperature)
    else:
        changed = ItemEmbeddings(model.item_ids, model.vectors[::-1].copy(), model.item_bias,
                                 model.temperature)
    bundle = write_bundle(tmp_path / "changed", changed, config={}, stats={})
    for name in ("index-recommend.faiss", "index-recommend.json"):  # the old model's index
        (bundle / name).write_bytes((tmp_path / "model" / name).read_bytes())
    with caplog.at_level(logging.INFO, logger="itemvec.query.recommend_index"):
        rebuilt = load(changed, bundle, save=True)
    assert "stale" in caplog.text and "built the recommend index" in caplog.text
    histories = sampled_histories(len(changed), seed=3, count=40)
    assert rebuilt.recall(changed.pool(histories), histories) >= 0.98
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="itemvec.query.recommend_index"):
        load(changed, bundle)  # save=True stored a fresh one
    assert "loaded stored recommend index" in caplog.text


def test_a_damaged_stored_index_is_ignored(model, index, bundle, caplog):
    path = save_recommend_index(index, bundle)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO):
        loaded = load(model, bundle, nprobe=index.params["nprobe"])
    assert "checksum mismatch" in caplog.text and "built the recommend index" in caplog.text
    histories = sampled_histories(len(model), seed=5, count=20)
    pooled = model.pool(histories)
    assert all(np.array_equal(a, b) for a, b in zip(
        loaded.search(pooled, 10, None, histories)[0],
        index.search(pooled, 10, None, histories)[0], strict=True))


def test_use_index_wires_it_in_for_large_models_only(model, bundle, monkeypatch):
    small = ItemEmbeddings(model.item_ids, model.vectors, model.item_bias, model.temperature)
    assert small.use_index("ivf").recommend_index is None  # under the minimum: exact scan
    histories = sampled_histories(len(model), 9, 8)
    got = small.recommend_batch([small.item_ids[h] for h in histories], n=10)
    want_rows, want_logits = small.top_logits(small.pool(histories), 10, None, histories)
    assert [list(r) for r in got.ids] == [list(small.item_ids[r]) for r in want_rows]
    assert got.scores.tobytes() == np.stack(want_logits).tobytes()
    monkeypatch.setattr(embeddings_module, "RECOMMEND_INDEX_MIN_ITEMS", 1000)
    large = ItemEmbeddings.load(bundle).use_index("ivf", bundle=bundle, save=True)
    assert large.recommend_index is not None
    assert (bundle / "index-recommend.faiss").is_file()
    histories = [[f"i{j}" for j in h] for h in sampled_histories(len(model), 9, 30)]
    exact = small.use_index(None).recommend_batch(histories, n=10)
    approx = large.recommend_batch(histories, n=10)
    found = np.mean([np.sum(a >= e[-1] - 1e-4) / 10
                     for a, e in zip(approx.scores, exact.scores, strict=True)])
    assert found >= 0.98
    exact_one = large.with_query(popularity_weight=0.5)  # a later weight: still exact logits
    ids, scores = exact_one.recommend(histories[0], n=5)
    want_ids, want_scores = small.with_query(popularity_weight=0.5).recommend(histories[0], n=5)
    assert np.all(scores >= want_scores[-1] - 1e-4)
    assert large.use_index("exact").recommend_index is None  # exact similar index: none


def test_compact_models_answer_exactly(model, monkeypatch):
    monkeypatch.setattr(embeddings_module, "RECOMMEND_INDEX_MIN_ITEMS", 1000)
    rows = np.arange(len(model)) % 3000  # items share stored rows
    compact = ItemEmbeddings(model.item_ids, model.vectors[:3000], model.item_bias,
                             model.temperature, vector_rows=rows)
    compact.use_index("ivf")
    assert compact.recommend_index is None
    histories = [["i1", "i2"], ["i5"]]
    got = compact.recommend_batch(histories, n=10)
    pooled = compact.pool([compact.indices(h) for h in histories])
    want_rows, _ = compact.top_logits(pooled, 10, None, [compact.indices(h) for h in histories])
    assert [list(r) for r in got.ids] == [list(compact.item_ids[r]) for r in want_rows]


def test_popular_items_tied_past_the_fetch_go_to_the_lower_rows_as_in_the_exact_scan(model):
    """A model without learned popularity (bias all 0): an empty history ties every item,
    and the exact scan answers the first rows; the popular block's partial sort must not pick
    an arbitrary fetch of the tied popular items."""
    flat = ItemEmbeddings(model.item_ids, model.vectors, None, model.temperature)
    index = build(flat, nprobe=4)
    empty = [np.zeros(0, np.int64)] * 2
    rows, logits = index.search(flat.pool(empty), 10, None, empty)
    want_rows, want_logits = flat.top_logits(flat.pool(empty), 10, None, empty)
    assert [list(r) for r in rows] == [list(r) for r in want_rows] == [list(range(10))] * 2
    assert np.stack(logits).tobytes() == np.stack(want_logits).tobytes()


def test_a_filter_allowing_only_unpopular_items_keeps_recall(model, index, histories):
    """The popular block is filtered away and fewer allowed items lie in each probed list, so
    the search visits more lists in proportion to the blocked share."""
    blocked = np.zeros(len(model), dtype=bool)
    blocked[np.argsort(-model.item_bias)[: int(0.9 * len(model))]] = True  # 10% least popular
    pooled = model.pool(histories)
    rows, logits = index.search(pooled, 10, blocked, histories)
    _, exact = model.top_logits(pooled, 10, blocked, histories)
    assert not any(blocked[r].any() for r in rows)
    found = [np.sum(got >= want[-1] - 1e-4) / 10 for got, want in zip(logits, exact, strict=True)]
    assert np.mean(found) >= 0.98
