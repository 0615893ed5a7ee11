"""Attribute similarity and its fusion with behaviour in a text query's neighbours."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.query.attributes import AttributeIndex, attribute_columns, fused, rank_among
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.search import ItemSearch

TABLE = pl.DataFrame({
    "item_id": ["a", "b", "c", "d", "e", "f"],
    "title": ["Alpha One", "Beta Two", "Gamma Three", "Delta Four", "Eps Five", "Zeta Six"],
    "genre": ["space|war", "space", "drama", "drama|war", "comedy", "comedy"],
    "flag": ["0", "0", "0", "0", "1", "0"],
    "price": [1.5, 2.25, 3.75, 9.5, 0.5, 7.0],
    "url": [f"http://x.org/{i}" for i in range(6)],
})


def test_attribute_columns_are_categorical_without_titles_ids_prices_or_links():
    assert attribute_columns(TABLE, ("title",)) == ["genre", "flag"]
    assert attribute_columns(None) == []


def test_a_value_nearly_every_item_has_weighs_almost_nothing():
    index = AttributeIndex(TABLE, ["genre", "flag"])
    affinity = index.affinity(np.array([0]), np.array([1.0]))  # "space|war", flag 0
    assert affinity[0] == pytest.approx(1.0, abs=1e-5)
    assert affinity[1] > affinity[3] > affinity[2]  # space (2 holders) > war > only flag 0
    assert affinity[2] < 0.1 and affinity[4] == 0.0  # the common flag alone; nothing shared


def test_several_seeds_weigh_by_their_scores():
    index = AttributeIndex(TABLE, ["genre"])
    towards_b = index.affinity(np.array([1, 2]), np.array([1.0, 0.1]))
    towards_c = index.affinity(np.array([1, 2]), np.array([0.1, 1.0]))
    assert towards_b[1] > towards_b[2] and towards_c[2] > towards_c[1]


def test_ranks_share_ties_and_fusion_favours_agreement():
    assert rank_among(np.array([0.9, 0.5, 0.1]), np.array([0.9, 0.5, 0.5, 0.1])).tolist() == [1, 2, 4]
    assert fused(np.array([3]), np.array([3]))[0] > fused(np.array([1]), np.array([50]))[0]


# -- the fill of a text query: behaviour misses the sequel, the attributes find it ----------------
def films(n_warm: int | None = None) -> ItemEmbeddings:
    """"50" (Star Wars) among 13 behaviour neighbours in direction 0 ("181", a sequel, one of
    them); its other sequel "172" in direction 1 (what people rated next to it is other films);
    the three share a rare genre value; "900" is a cold item with that genre, far in behaviour."""
    rng = np.random.default_rng(0)
    ids = ["50", "172", "181", *(f"n{k}" for k in range(12)), *(f"o{k}" for k in range(12)), "900"]
    direction = [0, 1, 0, *[0] * 12, *[1] * 12, 2]
    vectors = np.eye(3)[direction] + 0.05 * rng.normal(size=(len(ids), 3))
    genre = ["space opera", "space opera", "space opera", *["drama"] * 6, *["action"] * 6,
             *["drama"] * 12, "space opera"]
    table = pl.DataFrame({"item_id": ids, "title": ["Star Wars (1977)", "Empire (1980)",
                                                     "Jedi (1983)", *ids[3:]],
                          "genre": genre, "flag": ["0"] * len(ids)})
    return ItemEmbeddings(ids, vectors, np.zeros(len(ids)), item_table=table,
                          n_warm=n_warm)


def test_behaviour_alone_misses_the_sequel_that_the_attributes_find():
    emb = films()
    search = ItemSearch(emb)
    ids, scores, matches = search.by_text("star wars", n=5)
    assert ids[0] == "50" and set(ids[1:3]) == {"172", "181"}
    assert np.all(np.diff(scores[1:]) <= 0) and scores[1] <= 2 / 61
    emb.item_table = emb.item_table.drop("genre")  # no rare attribute left: behaviour only
    ids, _, _ = ItemSearch(emb).by_text("star wars", n=5)
    assert "172" not in ids and "181" not in ids[:3]


def test_fused_neighbours_keep_the_filters():
    search = ItemSearch(films())
    ids, _, _ = search.by_text("star wars", n=5, exclude=["172"])
    assert "172" not in ids and ids[0] == "50"
    keep = np.isin(films().item_ids, ["50", "172", "o1", "o2"])
    ids, _, _ = search.by_text("star wars", n=5, filter=keep)
    assert set(ids) <= {"50", "172", "o1", "o2"} and ids[1] == "172"


def test_cold_items_do_not_come_in_through_their_attributes():
    emb = films(n_warm=27)  # "900", sharing the genre, is cold
    ids, _, _ = ItemSearch(emb).by_text("star wars", n=6)
    assert "172" in ids[:3] and "900" not in ids
