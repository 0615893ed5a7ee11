"""The five data sets in ../shared/data read from their original files with the options the
README's "Bring your own data" section documents (reading only; skipped without the data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from itemvec.config import IngestConfig
from itemvec.data.ingest import read_events

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

# data set -> (paths relative to its folder, IngestConfig settings = the documented CLI options)
COMMANDS = {
    "movielens-100k": (["u.data"], dict(sep="\\t", header=False, columns="user,item,rating,ts",
                                        context="user", item="item", time="ts")),
    "amazon-beauty": (["Beauty.txt"], dict(format="sequences")),
    "groceries": (["groceries_baskets.csv"], dict(format="baskets")),
    "instacart-sample": (["order_products__*_head.csv"],
                         dict(context="order_id", item="product_id", order="add_to_cart_order")),
    "diginetica": (["sample_train-item-views.csv"],
                   dict(context="session_id", item="item_id", time="eventdate",
                        order="timeframe")),
}
# contexts, items, events of each as read (the counts its SOURCE.md gives, deduplicated)
EXPECTED = {
    "movielens-100k": (943, 1682, 100_000),
    "amazon-beauty": (22_363, 12_101, 198_502),
    "groceries": (9835, 169, 43_367),
    "instacart-sample": (8953, 15_881, 91_783),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_reads_from_the_original_files(name):
    root = DATA / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    paths, options = COMMANDS[name]
    log = read_events([str(root / p) for p in paths], IngestConfig(**options))
    assert log.n_contexts > 100 and log.n_items > 100 and log.n_events > 10_000
    if name in EXPECTED:
        assert (log.n_contexts, log.n_items, log.n_events) == EXPECTED[name]
    if name == "amazon-beauty":
        assert log.context_ids[0] == "1" and log.times is None
    if name == "groceries":
        assert "whole milk" in set(log.item_ids) and not log.ordered
