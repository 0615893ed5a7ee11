"""Search by text, id and vector, and item-table filters, on the planted-category shop."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.search import (
    ItemSearch,
    TextQuery,
    item_filter,
    text_columns,
    text_encoders,
    title_forms,
)
from itemvec.util.errors import ConfigError, ItemvecError


@pytest.fixture(scope="module")
def model(trained, shop) -> ItemEmbeddings:
    emb = trained.embeddings
    return ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature, emb.query,
                          item_table=shop.items)


def test_text_columns_are_the_free_text_and_named_ones(shop):
    assert "title" in text_columns(shop.items)
    assert "price" not in text_columns(shop.items)


def test_text_query_finds_the_category_named_in_titles(model, categories):
    ids, scores, matches = ItemSearch(model).by_text("cat003", n=20)
    assert matches and all(categories[i] == "cat003" for i, _ in matches[:5])
    assert np.mean([categories[i] == "cat003" for i in ids]) >= 0.8
    assert np.all(np.diff(scores) <= 1e-6)


def test_text_query_without_any_match_returns_nothing(model):
    ids, scores, matches = ItemSearch(model).by_text("zzqqxx", n=5)
    assert len(ids) == 0 and len(scores) == 0 and matches == []


def test_model_without_text_says_so(trained):
    with pytest.raises(ItemvecError, match="no text to search"):
        ItemSearch(trained.embeddings).by_text("shoes")


def test_search_by_vector_and_by_id(model):
    search = ItemSearch(model)
    ids, scores = search.by_vector(model.vector("i5"), n=3)
    assert ids[0] == "i5" and scores[0] == pytest.approx(1.0, abs=1e-5)
    by_id, _ = search.by_id("i5", n=3)
    assert "i5" not in by_id and list(by_id) == list(ids[1:]) + [by_id[-1]]
    with pytest.raises(ItemvecError, match="vector has 3 values"):
        search.by_vector(np.ones(3))


def test_where_filter_restricts_to_a_column_value(model, categories):
    mask = item_filter(model, where={"category": "cat001"})
    ids, _ = model.similar_items("i5", n=10, filter=mask)
    assert len(ids) == 10 and all(categories[i] == "cat001" for i in ids)
    several = item_filter(model, where={"category": ["cat001", "cat002"]})
    assert several.sum() > mask.sum()


def test_allow_list_and_exclusions_combine(model):
    in_stock = ["i1", "i2", "i3", "i4", "unknown"]
    ids, _ = model.similar_items("i5", n=10, filter=item_filter(model, allowed=in_stock),
                                 exclude=["i2"])
    assert set(ids) == {"i1", "i3", "i4"}


def test_unknown_column_names_the_known_ones(model):
    with pytest.raises(ItemvecError, match="unknown item-table column 'colour'; known: .*category"):
        item_filter(model, where={"colour": "red"})


def test_text_encoder_is_pluggable(model):
    @text_encoders.register("test-fixed")
    class Fixed:
        name = "test-fixed"

        def __init__(self, embeddings, **_):
            self.embeddings = embeddings

        def encode(self, query):
            return TextQuery(self.embeddings.vector("i7"), [("i7", 1.0)])

    ids, _, matches = ItemSearch(model, text_encoder="test-fixed").by_text("anything", n=1)
    assert list(ids) == ["i7"] and matches == [("i7", 1.0)]
    with pytest.raises(ConfigError, match="unknown text encoder"):
        ItemSearch(model, text_encoder="nope").by_text("x")


# -- lexical first, then neighbours: a small film and grocery catalogue ----------------------------
FILMS = {  # id: (title, direction, popularity)
    "50": ("Star Wars (1977)", 0, 5.0), "172": ("Empire Strikes Back, The (1980)", 0, 4.0),
    "181": ("Return of the Jedi (1983)", 0, 4.5), "222": ("Star Trek: First Contact (1996)", 1, 3.0),
    "230": ("Star Trek IV: The Voyage Home (1986)", 1, 2.0), "1": ("Lone Star (1996)", 2, 1.0),
    "2": ("Star Kid (1997)", 2, 0.5), "127": ("Godfather, The (1972)", 3, 4.0),
    "3": ("Cité des enfants perdus, La (1995)", 3, 0.1), "4": ("Schindler's List (1993)", 3, 3.0),
}
GROCERIES = {"m1": ("Organic Milk", 0, 1.0), "m2": ("Organic Milk", 0, 2.0),
             "m3": ("Organic Whole Milk", 0, 3.0), "m4": ("Milk Chocolate", 1, 5.0),
             "m5": ("Organic Bananas", 2, 9.0), "m6": ("Oat Milk", 0, 0.5)}


def catalogue(items: dict) -> ItemEmbeddings:
    """Items in a few directions (small seeded noise), popularity as the item bias."""
    rng = np.random.default_rng(0)
    ids = list(items)
    vectors = np.eye(4)[[items[i][1] for i in ids]] + 0.05 * rng.normal(size=(len(ids), 4))
    table = pl.DataFrame({"item_id": ids, "title": [items[i][0] for i in ids]})
    return ItemEmbeddings(ids, vectors, np.log([items[i][2] for i in ids]), item_table=table)


@pytest.mark.parametrize(("title", "forms"), [
    ("Empire Strikes Back, The (1980)", ("the empire strikes back 1980", "the empire strikes back")),
    ("Cité des enfants perdus, La (1995)", ("la cite des enfants perdus 1995",
                                            "la cite des enfants perdus")),
    ("Schindler's List (1993)", ("schindlers list 1993", "schindlers list")),
    ("  ORGANIC   Milk!", ("organic milk", "organic milk")),
])
def test_title_forms_are_what_a_person_types(title, forms):
    assert title_forms(title) == forms


def test_star_wars_finds_its_title_then_its_neighbours_not_star_trek():
    ids, scores, matches = ItemSearch(catalogue(FILMS)).by_text("star wars", n=5)
    assert ids[0] == "50" and set(ids[1:3]) == {"172", "181"}  # the match, then its neighbours
    assert matches == [("50", 1.0)] and scores[0] == 1.0
    assert not {"222", "230", "1", "2"} & set(ids[:3])


@pytest.mark.parametrize("query", ["Empire Strikes Back, The (1980)", "the empire strikes back",
                                   "Empire Strikes Back", "empire strikes back 1980"])
def test_a_title_however_typed_comes_first(query):
    assert ItemSearch(catalogue(FILMS)).by_text(query, n=3)[0][0] == "172"


def test_accents_and_apostrophes_do_not_matter():
    search = ItemSearch(catalogue(FILMS))
    assert search.by_text("la cite des enfants perdus", n=1)[0][0] == "3"
    assert search.by_text("schindlers list", n=1)[0][0] == "4"


def test_every_word_matches_rank_by_bm25_before_neighbours():
    ids, scores, matches = ItemSearch(catalogue(GROCERIES)).by_text("organic milk", n=5)
    assert list(ids[:3]) == ["m2", "m1", "m3"]  # exact titles (the popular one first), then BM25
    assert [m for m, _ in matches] == ["m2", "m1", "m3"] and scores[:2].tolist() == [1.0, 1.0]
    assert "m4" not in ids[:4] and "m5" not in ids[:4]  # one word only: not lexical matches
    assert ids[3] == "m6"  # the neighbour of the milks, though "oat milk" lacks "organic"


def test_partial_matches_only_when_nothing_holds_every_word():
    ids, _, matches = ItemSearch(catalogue(FILMS)).by_text("star wars trilogy", n=1)
    assert list(ids) == ["50"] and matches == [("50", 1.0)]


def test_a_misspelt_title_falls_back_to_character_ngrams():
    ids, _, matches = ItemSearch(catalogue(FILMS)).by_text("godfathr", n=2)
    assert ids[0] == "127" and matches[0][0] == "127"


def test_text_search_applies_the_filters_to_matches_and_neighbours():
    emb = catalogue(FILMS)
    ids, _, matches = ItemSearch(emb).by_text("star wars", n=4, exclude=["181"])
    assert "181" not in ids and ids[0] == "50"
    keep = np.isin(emb.item_ids, ["172", "181", "222"])
    ids, _, _ = ItemSearch(emb).by_text("star wars", n=3, filter=keep)
    assert set(ids) <= {"172", "181", "222"} and "50" not in ids


def test_url_columns_are_not_searched():
    table = pl.DataFrame({"item_id": ["a"], "title": ["Heat (1995)"],
                          "url": ["http://us.imdb.com/M/title-exact?Heat%20(1995)"]})
    assert text_columns(table) == ["title"]
