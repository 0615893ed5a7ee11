"""Label columns: detected once (any case, most specific first), asked for, or turned off."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.labels import (
    all_labels,
    detect_label_column,
    item_labels,
    label_column,
    label_lookup,
)
from itemvec.util.errors import ItemvecError


def embeddings_with(table: pl.DataFrame | None) -> ItemEmbeddings:
    return ItemEmbeddings(["a", "b", "c"], np.eye(3, dtype=np.float32), item_table=table)


@pytest.mark.parametrize(("columns", "expected"), [
    (["item_id", "genre", "Title", "Name"], "Title"),  # case-insensitive; title before name
    (["item_id", "aisle", "product_name"], "product_name"),  # instacart
    (["item_id", "NAME"], "NAME"),
    (["item_id", "price", "category"], None),
    ([], None),
])
def test_detects_the_label_column(columns, expected):
    assert detect_label_column(columns) == expected


def test_label_column_asked_for_checked_or_off():
    table = pl.DataFrame({"item_id": ["a", "b"], "Title": ["Alpha", "Beta"],
                          "brand": ["x", "y"]})
    emb = embeddings_with(table)
    assert label_column(emb) == "Title"
    assert label_column(emb, "brand") == "brand"
    assert label_column(emb, "title") == "Title"  # any case
    assert label_column(emb, "none") is None
    with pytest.raises(ItemvecError, match=r"--label 'colour'.*known: Title, brand"):
        label_column(emb, "colour")
    assert label_column(embeddings_with(None)) is None
    with pytest.raises(ItemvecError, match="train with --items"):
        label_column(embeddings_with(None), "title")


def test_item_labels_in_the_order_asked_with_gaps():
    table = pl.DataFrame({"item_id": ["a", "b"], "title": ["Alpha", None]})
    emb = embeddings_with(table)
    assert item_labels(emb, ["b", "c", "a"], "title") == [None, None, "Alpha"]
    assert item_labels(emb, ["a"], None) is None
    assert all_labels(emb, "title") == ["Alpha", None, None]
    assert label_lookup(emb, "title") == {"a": "Alpha", "b": None}
    assert label_lookup(emb, None) is None
    numbers = embeddings_with(pl.DataFrame({"item_id": ["a"], "name": [7]}))
    assert item_labels(numbers, ["a"], "name") == ["7"]


def test_labels_come_from_the_first_row_of_an_id_and_follow_a_new_table():
    """A request gathers rows through a vocabulary -> table-row map built once per table:
    repeated ids take their first row, ids outside the model are still looked up, and a
    replaced table is not answered from the old map."""
    table = pl.DataFrame({"item_id": ["c", "a", "c", "zz"], "title": ["Gamma", "Alpha", "Dup",
                                                                     "Outside"]})
    emb = embeddings_with(table)
    assert item_labels(emb, ["c", "a", "b", "zz", "nope"], "title") == [
        "Gamma", "Alpha", None, "Outside", None]
    emb.item_table = pl.DataFrame({"item_id": ["b"], "title": ["Beta"]})
    assert item_labels(emb, ["a", "b"], "title") == [None, "Beta"]


def test_every_lookup_labels_a_repeated_id_by_its_first_row():
    """Serving (``item_labels``, model items and ids outside the model alike), the CLI's batch
    lookup (``label_lookup``) and ``/items`` attributes (``aligned_table``) agree."""
    table = pl.DataFrame({"item_id": ["c", "zz", "c", "zz"],
                          "title": ["Gamma", "Outside", "Dup", "Later"]})
    emb = embeddings_with(table)
    assert item_labels(emb, ["c", "zz"], "title") == ["Gamma", "Outside"]
    lookup = label_lookup(emb, "title")
    assert (lookup["c"], lookup["zz"]) == ("Gamma", "Outside")
