"""The synthetic shop: sizes, seeds, and the planted structure the other tests rely on."""

from __future__ import annotations

import numpy as np
import polars as pl

from itemvec.data.synth import category_names, generate, write


def test_sizes_columns_and_types():
    shop = generate(5_000, 200, n_categories=8, seed=1)
    assert shop.events.height == 5_000
    assert shop.events.columns == ["session_id", "user_id", "item_id", "ts", "event"]
    assert shop.events["item_id"].dtype == pl.String
    assert set(shop.events["event"].unique()) <= {"view", "cart", "purchase"}
    assert shop.items.height == 200 and shop.items["category"].n_unique() == 8
    assert set(shop.events["item_id"].unique()) <= set(shop.items["item_id"])
    assert category_names(3) == ["cat000", "cat001", "cat002"]


def test_same_seed_same_shop_other_seed_other_shop():
    a, b = generate(2_000, 100, 5, seed=3), generate(2_000, 100, 5, seed=3)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert not generate(2_000, 100, 5, seed=4).events.equals(a.events)


def test_sessions_are_time_ordered_and_at_least_two_long_mostly():
    events = generate(5_000, 200, 8, seed=0).events
    per_session = events.group_by("session_id", maintain_order=True).agg(
        pl.col("ts"), pl.len().alias("n"))
    assert all(np.all(np.diff(ts) > 0) for ts in per_session["ts"].to_list())
    assert per_session["n"].mean() > 3


def test_sessions_mostly_stay_in_one_category():
    """The planted answer: consecutive events share a category far above chance."""
    shop = generate(20_000, 400, n_categories=10, seed=0)
    category = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    events = shop.events
    cats = np.array([category[i] for i in events["item_id"]])
    sessions = events["session_id"].to_numpy()
    same_session = sessions[1:] == sessions[:-1]
    same_category = (cats[1:] == cats[:-1])[same_session].mean()
    assert same_category > 0.6  # chance is about 0.1 with 10 categories


def test_popularity_is_skewed():
    counts = generate(20_000, 400, 10, seed=0).events["item_id"].value_counts()["count"]
    counts = np.sort(counts.to_numpy())[::-1]
    assert counts[:40].sum() > 0.3 * counts.sum()  # top 10% of items draw > 30% of events


def test_write_puts_the_item_table_beside_the_events(tmp_path):
    shop = generate(1_000, 50, 5, seed=0)
    for name in ("e.csv", "e.tsv", "e.jsonl", "e.parquet"):
        events, items = write(shop, tmp_path / name)
        assert events == tmp_path / name
        assert items.name == "e_items" + events.suffix
        assert events.stat().st_size > 0 and items.stat().st_size > 0
    back = pl.read_parquet(tmp_path / "e.parquet")
    assert back.equals(shop.events)
