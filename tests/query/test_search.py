"""Search by text, id and vector, and item-table filters, on the planted-category shop."""

from __future__ import annotations

import numpy as np
import pytest

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.search import ItemSearch, TextQuery, item_filter, text_columns, text_encoders
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
