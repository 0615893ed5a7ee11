"""Query tuning on held-out queries: known answers from planted popularity and planted pairs."""

from __future__ import annotations

import numpy as np

from itemvec.config import QueryConfig
from itemvec.evaluation.protocol import Queries
from itemvec.evaluation.query_tuning import GRIDS, tune_query
from itemvec.query.embeddings import ItemEmbeddings

N_ITEMS, DIM = 200, 16


def _queries(histories: list[int], targets: list[int]) -> dict[str, Queries]:
    q = Queries([np.array([h]) for h in histories], np.asarray(targets))
    return {"i2i": q, "s2i": q}


def test_popularity_wins_when_vectors_carry_nothing():
    rng = np.random.default_rng(0)
    popularity = 1.0 / np.arange(1, N_ITEMS + 1)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    emb = ItemEmbeddings([f"i{i}" for i in range(N_ITEMS)], vectors, np.log(popularity),
                         temperature=0.2, query=QueryConfig())
    targets = rng.choice(N_ITEMS, size=600, p=popularity / popularity.sum())
    histories = rng.integers(N_ITEMS, size=600)
    keep = targets != histories
    chosen, info = tune_query(emb, _queries(list(histories[keep]), list(targets[keep])),
                              ordered=False)
    assert chosen.popularity_weight == max(GRIDS["popularity_weight"])
    assert info["best"] > info["start"]


def test_association_wins_when_popularity_is_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(N_ITEMS // 2, DIM)).astype(np.float32)
    vectors = np.repeat(base / np.linalg.norm(base, axis=1, keepdims=True), 2, axis=0)
    noise = rng.normal(0, 3, size=N_ITEMS).astype(np.float32)  # a "popularity" that misleads
    emb = ItemEmbeddings([f"i{i}" for i in range(N_ITEMS)], vectors, noise, temperature=0.2,
                         query=QueryConfig())
    histories = rng.integers(N_ITEMS, size=400)
    targets = histories ^ 1  # the planted partner
    chosen, info = tune_query(emb, _queries(list(histories), list(targets)), ordered=False)
    assert chosen.popularity_weight == min(GRIDS["popularity_weight"])
    assert chosen.recency_half_life == QueryConfig().recency_half_life  # baskets: not tuned
    assert info["best"] >= info["start"]
