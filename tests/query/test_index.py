"""Index backends: exact is exact, ANN recall against exact is high, filters are honoured, and
recommendations through an index equal the exact ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import itemvec.query.embeddings as embeddings_module
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.index import (
    ExactIndex,
    build_index,
    doubling_nprobe,
    indexes,
    load_index,
    probes_for,
    recall_at_k,
    save_index,
)
from itemvec.util.errors import ConfigError

pytest.importorskip("faiss")


def clustered_vectors(n: int, dim: int = 32, centres: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim))
    vectors = middle[rng.integers(centres, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(4000)


def test_exact_index_matches_brute_force(vectors):
    queries = vectors[:17]
    scores, rows = ExactIndex(vectors, chunk=5).search(queries, 7)
    full = queries @ vectors.T
    expected = np.argsort(-full, axis=1)[:, :7]
    assert np.array_equal(rows, expected)
    assert np.allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-5)
    assert np.array_equal(rows[:, 0], np.arange(17))  # a unit vector is its own nearest


def test_exact_index_pads_with_minus_one_past_the_end():
    scores, rows = ExactIndex(clustered_vectors(3)).search(clustered_vectors(3)[:1], 5)
    assert list(rows[0, 3:]) == [-1, -1] and np.all(np.isinf(scores[0, 3:]))


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
def test_ann_recall_at_10_against_exact(vectors, name):
    index = build_index(name, vectors)
    assert index.approximate
    assert recall_at_k(index, vectors, vectors[::20], k=10) >= 0.95


def test_unknown_backend_and_parameter_name_the_known_ones(vectors):
    with pytest.raises(ConfigError, match="unknown index backend 'annoy'; known: exact, hnsw, ivf"):
        build_index("annoy", vectors)
    with pytest.raises(ConfigError, match="unknown parameter 'ef'"):
        build_index("hnsw", vectors, ef=3)
    assert {"exact", "hnsw", "ivf"} <= set(indexes.names())


def test_auto_is_exact_for_small_vocabularies(vectors):
    assert build_index("auto", vectors).name == "exact"


@pytest.fixture(scope="module")
def model(vectors) -> ItemEmbeddings:
    rng = np.random.default_rng(1)
    return ItemEmbeddings([f"i{i}" for i in range(len(vectors))], vectors,
                          rng.normal(scale=0.5, size=len(vectors)), temperature=0.1)


@pytest.fixture(scope="module")
def ann_model(model) -> ItemEmbeddings:
    clone = model.with_query()
    return clone.use_index("hnsw")


def test_similar_items_through_the_index_match_exact(model, ann_model):
    ids = [f"i{i}" for i in range(0, 4000, 97)]
    exact, _ = model.similar_items_batch(ids, n=10)
    approx, _ = ann_model.similar_items_batch(ids, n=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
    assert overlap >= 0.95
    assert all(q not in row for q, row in zip(ids, approx, strict=True))  # never the query


def test_index_honours_filters_including_very_selective_ones(model, ann_model):
    allowed = np.zeros(len(model), dtype=bool)
    allowed[::50] = True  # 2% of items: answered by an exact scan of the allowed ones
    got, scores = ann_model.similar_items("i3", n=5, filter=allowed)
    want, want_scores = model.similar_items("i3", n=5, filter=allowed)
    assert list(got) == list(want) and np.allclose(scores, want_scores, atol=1e-5)
    half = np.arange(len(model)) % 2 == 0
    got, _ = ann_model.similar_items("i3", n=20, filter=half, exclude=["i4", "i6"])
    rows = model.indices(got)
    assert np.all(rows % 2 == 0) and "i4" not in got and "i6" not in got and len(got) == 20


def test_recommend_through_the_index_equals_exact(model, ann_model, monkeypatch):
    monkeypatch.setattr(embeddings_module, "INDEX_RECOMMEND_MIN_ITEMS", 0)  # 4000 items: use it
    rng = np.random.default_rng(2)
    histories = [[f"i{j}" for j in rng.integers(len(model), size=rng.integers(1, 6))]
                 for _ in range(40)] + [[]]
    exact_ids, exact_scores = model.recommend_batch(histories, n=10)
    ann_ids, ann_scores = ann_model.recommend_batch(histories, n=10)
    same = np.mean([list(a) == list(b) for a, b in zip(exact_ids, ann_ids, strict=True)])
    assert same >= 0.95
    for history, row in zip(histories, ann_ids, strict=True):
        assert not set(history) & set(row)  # seen items filtered
    assert np.allclose(exact_scores[-1], ann_scores[-1], atol=1e-5)  # empty history: popularity


def test_vector_query_through_the_index(model, ann_model):
    ids, scores = ann_model.similar_to_vector(model.vector("i9") * 3.0, n=3)
    assert ids[0] == "i9" and scores[0] == pytest.approx(1.0, abs=1e-4)


def test_stored_index_is_reused_and_rebuilt_when_stale(tmp_path, vectors):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"files": {"embeddings.npy": "abc"}}))
    built = build_index("ivf", vectors, nlist=32, nprobe=8)
    path = save_index(built, bundle)
    assert path is not None and path.name == "index-ivf.faiss"
    loaded = load_index(bundle, vectors, "ivf")
    assert loaded.params["nlist"] == 32 and loaded.params["nprobe"] == 8
    assert np.array_equal(loaded.search(vectors[:5], 5)[1], built.search(vectors[:5], 5)[1])
    for name, params in (("ivf", {"nlist": 32, "nprobe": 8}), ("hnsw", {})):
        save_index(build_index(name, vectors, **params), bundle)
        mapped, copied = (load_index(bundle, vectors, name, mmap=m) for m in (True, False))
        assert np.array_equal(mapped.search(vectors[:9], 5)[1], copied.search(vectors[:9], 5)[1])
        maps = Path("/proc/self/maps").read_text()  # the file is mapped, not copied in
        assert str(bundle / f"index-{name}.faiss") in maps, name
    (bundle / "manifest.json").write_text(json.dumps({"files": {"embeddings.npy": "changed"}}))
    rebuilt = load_index(bundle, vectors, "ivf", nlist=16)
    assert rebuilt.params["nlist"] == 16
    assert save_index(ExactIndex(vectors), bundle) is None  # exact stores nothing


@pytest.mark.parametrize("damage", ["flip", "truncate", "no checksum"])
def test_a_damaged_stored_index_is_rebuilt_with_a_warning(tmp_path, vectors, damage, caplog):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"files": {"embeddings.npy": "abc"}}))
    built = build_index("ivf", vectors, nlist=32, nprobe=32)
    path = save_index(built, bundle)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        for offset in (len(raw) // 3, len(raw) // 2, 2 * len(raw) // 3, len(raw) - 9):
            raw[offset] ^= 0x5A  # four flipped bytes: vectors or lists change silently
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        meta_path = bundle / "index-ivf.json"
        meta = json.loads(meta_path.read_text())
        del meta["sha256"]
        meta_path.write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="itemvec.query.index"):
        loaded = load_index(bundle, vectors, "ivf", save=True)
    assert "rebuilding the index" in caplog.text and "index-ivf.faiss" in caplog.text
    exact = ExactIndex(vectors).search(vectors[:20], 10)[1]
    assert np.array_equal(loaded.search(vectors[:20], 10)[1], exact)  # nprobe = nlist: exact
    caplog.clear()
    with caplog.at_level("WARNING", logger="itemvec.query.index"):
        load_index(bundle, vectors, "ivf")  # save=True stored a sound one again
    assert "rebuilding" not in caplog.text


def test_ivf_probes_as_many_lists_as_its_vectors_need():
    """nprobe 0 picks the smallest number of lists reaching recall@10 0.99 on sampled items:
    few on clustered vectors (and the neighbours of other items are still found), many on
    vectors without structure."""
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 16))
    clustered = (centres[rng.integers(0, 100, size=20000)]
                 + 0.15 * rng.normal(size=(20000, 16))).astype(np.float32)
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    index = build_index("ivf", clustered)
    nlist, nprobe = index.params["nlist"], index.params["nprobe"]
    assert nprobe <= nlist // 16
    queries = clustered[rng.choice(20000, size=300, replace=False)]
    exact, _ = faiss.knn(queries, clustered, 10, metric=faiss.METRIC_INNER_PRODUCT)
    found, _ = index.search(queries, 10)
    assert (found >= exact[:, -1:] - 1e-5).mean() >= 0.97
    flat = rng.normal(size=(20000, 16)).astype(np.float32)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    assert build_index("ivf", flat).params["nprobe"] >= 4 * nprobe


def test_ivf_visits_more_lists_for_more_results():
    """nprobe is tuned for 10 results; a recommendation's 1,600 candidates must be the true
    nearest for its bound to hold, so larger k visits more lists, up to nlist/16."""
    params = {"nlist": 4000, "nprobe": 15}
    assert probes_for(params, 10) == 15
    assert probes_for(params, 11) == 17  # ten neighbours and the item: in proportion
    assert probes_for(params, 20) == 30
    assert probes_for(params, 1600) == 250
    assert probes_for({"nlist": 64, "nprobe": 32}, 1600) == 32  # never fewer than tuned


def test_nprobe_search_doubles_then_bisects_to_the_smallest_reaching_the_target():
    """Doubling alone overshoots by up to 2x (30 lists where 19 reach the target); the
    bisection between the last two tried finds the smallest, and reports its recall."""
    tried = []

    def recall_at(nprobe: int) -> float:
        tried.append(nprobe)
        return min(1.0, nprobe / 19.1)

    assert doubling_nprobe(4000, recall_at, 0.99) == (19, 19 / 19.1)
    assert tried[:2] == [15, 30] and len(tried) <= 2 + 4
    assert doubling_nprobe(64, lambda nprobe: 0.5, 0.99) == (64, 0.5)  # never reached: all
    assert doubling_nprobe(4000, lambda nprobe: 1.0, 0.99) == (1, 1.0)  # below the start too
