"""k-means clusters on the shop line up with the hidden categories, and say so in the summary."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.analysis.clustering import categorical_columns, cluster
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ItemvecError


@pytest.fixture(scope="module")
def model(trained, shop) -> ItemEmbeddings:
    emb = trained.embeddings
    return ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature, emb.query,
                          item_table=shop.items)


def test_clusters_recover_hidden_categories(model, categories):
    assignments, summary = cluster(model, k=10, seed=0)
    assert assignments.height == len(model) and summary["size"].sum() == len(model)
    # each cluster is dominated by one category, per the summary and per the ground truth
    assert summary["category_share"].mean() >= 0.8
    truth = [categories[i] for i in assignments["item_id"]]
    purity = []
    for c in range(10):
        members = [t for t, a in zip(truth, assignments["cluster"], strict=True) if a == c]
        purity.append(max(members.count(v) for v in set(members)) / len(members))
    assert np.mean(purity) >= 0.8
    assert all("(" in row for row in summary["top_items"])  # titles shown beside ids


def test_categorical_columns_skip_free_text_and_numbers(shop):
    columns = categorical_columns(shop.items)
    assert "category" in columns and "title" not in columns and "price" not in columns


def test_k_out_of_range(model):
    with pytest.raises(ItemvecError, match="-k must be between 2"):
        cluster(model, k=1)


def test_cli_writes_ids_and_summary(cli, bundle_dir, tmp_path):
    out = tmp_path / "clusters.csv"
    code, stdout, err = cli(["cluster", bundle_dir, "-k", "5", "--out", out])
    assert code == 0, err
    ids = pl.read_csv(out)
    assert ids.columns == ["item_id", "cluster", "similarity"]
    assert ids["cluster"].n_unique() == 5
    summary = pl.read_csv(tmp_path / "clusters_summary.csv")
    assert summary.height == 5 and "top_items" in summary.columns
    assert "5 clusters" in stdout
