"""Adapters: each data set in ``../shared/data`` -> an itemvec ``EventLog`` + item categories.

Every adapter reads the original files with the product's readers (``ingest.file_events`` /
``read_table`` with the layout options of the README's "Bring your own data" commands), builds a
table with columns ``context, item, weight`` (and ``time`` when the data has a clock) and hands it
to ``itemvec.data.ingest.build_log`` with the ``IngestConfig`` that ``itemvec train`` would get
for the same file, so the benchmark reads data exactly as the product does. The logs are the
same as those of the earlier hand-written parsers (vocabulary, contexts, order: checked when
the readers changed). Nothing is copied into the repository.

Decisions per data set (see benchmarks/README.md):

* groceries: baskets, no time -> seeded random split. Items in a basket are in catalogue order.
* instacart-sample: prior_head + train_head orders are baskets, items in cart order; no clock
  -> seeded random split.
* movielens-100k: one context per user, every rating is an interaction, ordered by timestamp;
  split by the time of the user's last rating.
* amazon-beauty: one context per user in file (time) order. There are no timestamps, so the
  context is ordered by position but the split is seeded random (``times=None``): positions
  are not comparable across users, so they cannot define a time split.
* diginetica (views): sessions ordered by eventdate then timeframe; time = day + timeframe,
  split by the time of the session's last view.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from itemvec.config import IngestConfig
from itemvec.data.ingest import ROW, EventLog, Reading, build_log, file_events, read_table

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class Dataset:
    """An event log plus item -> category label maps (one per label set, e.g. level1/level2)."""

    name: str
    log: EventLog
    ingest: IngestConfig
    categories: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""
    # the events as read (context, item, weight, ROW) plus ``order``: the column a user could
    # pass as --time (basket position, cart order, timestamp), for benchmarks.context_kind
    events: pl.DataFrame | None = None
    order_note: str = ""


ADAPTERS: dict[str, Callable[[Path], Dataset]] = {}


def adapter(name: str):
    def register(fn: Callable[[Path], Dataset]) -> Callable[[Path], Dataset]:
        ADAPTERS[name] = fn
        return fn
    return register


def load(name: str, data_dir: str | Path = DEFAULT_DATA_DIR) -> Dataset:
    if name not in ADAPTERS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(ADAPTERS)}")
    root = Path(data_dir) / name
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data set folder not found; pass --data-dir")
    return ADAPTERS[name](root)


def _table(context: pl.Series, item: pl.Series, time: np.ndarray | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"context": context.cast(pl.String), "item": item.cast(pl.String)})
    frame = frame.with_row_index(ROW).with_columns(pl.lit(1.0, pl.Float32).alias("weight"))
    if time is not None:
        frame = frame.with_columns(pl.Series("time", time, dtype=pl.Float64))
    return frame


def _with_order(table: pl.DataFrame, order: np.ndarray | None = None) -> pl.DataFrame:
    """``table`` without its clock plus ``order``: the given values, or each event's position
    in its context in file order (0, 1, 2, ...)."""
    table = table.drop("time", strict=False)
    if order is None:
        position = pl.int_range(pl.len()).over("context").cast(pl.Float64)
        return table.with_columns(position.alias("order"))
    return table.with_columns(pl.Series("order", order, dtype=pl.Float64))


def _labels(keys: pl.Series, values: pl.Series) -> dict[str, str]:
    return {str(k): str(v) for k, v in zip(keys.to_list(), values.to_list(), strict=True)
            if k is not None and v is not None}


@adapter("groceries")
def groceries(root: Path) -> Dataset:
    ingest = IngestConfig(context="basket_id", item="item", context_kind="basket")
    table, _ = file_events(root / "groceries_transactions.csv", ingest)
    log = build_log(table, ingest, str(root))
    items = read_table(root / "groceries_items.csv")
    cats = {"level2": _labels(items["item"], items["level2"]),
            "level1": _labels(items["item"], items["level1"])}
    return Dataset("groceries", log, ingest, cats, "baskets, no clock: random split",
                   _with_order(table), "position in the basket (catalogue order)")


@adapter("instacart-sample")
def instacart(root: Path) -> Dataset:
    ingest = IngestConfig(context="order_id", item="product_id", order="add_to_cart_order",
                          context_kind="basket")
    parts = [file_events(root / f"order_products__{p}_head.csv", ingest)[0]
             for p in ("prior", "train")]
    order = pl.col("order").cast(pl.Int64)  # orders by number, then cart position
    table = (pl.concat(parts).sort([pl.col("context").cast(pl.Int64), order])
             .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW)))
    log = build_log(table, ingest, str(root))
    products = read_table(root / "products.csv")
    aisles = read_table(root / "aisles.csv")
    departments = read_table(root / "departments.csv")
    products = (products.join(aisles, on="aisle_id", how="left")
                .join(departments, on="department_id", how="left"))
    cats = {"aisle": _labels(products["product_id"], products["aisle"]),
            "department": _labels(products["product_id"], products["department"])}
    return Dataset("instacart-sample", log, ingest, cats,
                   "orders as baskets (cart order kept), no clock: random split",
                   _with_order(table.drop("order"), table["order"].to_numpy()),
                   "add_to_cart_order")


@adapter("movielens-100k")
def movielens(root: Path) -> Dataset:
    ingest = IngestConfig(sep="\t", header=False, columns="user,item,rating,ts", context="user",
                          item="item", time="ts", context_kind="session")
    table, _ = file_events(root / "u.data", ingest)
    time = table["time"].to_numpy()
    log = build_log(table, ingest, str(root))
    genres = read_table(root / "u.genre", Reading(sep="|", header=False, columns=("genre", "id"),
                                                   encoding="latin-1"))["genre"].to_list()
    movies = read_table(root / "u.item", Reading(
        sep="|", header=False, columns=("movie", "title", "date", "video", "url", *genres),
        encoding="latin-1"))
    first = pl.coalesce([pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in genres])
    first_genre = _labels(movies["movie"], movies.select(first.alias("g"))["g"])
    return Dataset("movielens-100k", log, ingest, {"first_genre": first_genre},
                   "user histories by timestamp, all ratings: split by last rating time",
                   _with_order(table, time), "timestamp")


@adapter("amazon-beauty")
def amazon_beauty(root: Path) -> Dataset:
    # Ordered contexts (file order = review time) but no clock: build_log keeps row order and
    # the split is seeded random.
    ingest = IngestConfig(format="sequences", context="user", item="item", context_kind="session")
    table, _ = file_events(root / "Beauty.txt", ingest)
    log = build_log(table, ingest, str(root))
    attributes = json.loads((root / "Beauty_item2attributes.json").read_text())
    frequency = Counter(a for values in attributes.values() for a in set(values))
    top = {item: str(max(set(values), key=lambda a: (frequency[a], -a)))
           for item, values in attributes.items() if values}
    return Dataset("amazon-beauty", log, ingest, {"top_attribute": top},
                   "user sequences in review order, no timestamps: random split",
                   _with_order(table), "position in the user's line (review order)")


@adapter("diginetica")
def diginetica(root: Path) -> Dataset:
    events = read_table(root / "sample_train-item-views.csv")  # ';' sniffed
    day = events["eventdate"].str.to_date("%Y-%m-%d").cast(pl.Datetime("ms")).dt.epoch("s")
    time = day.cast(pl.Float64).to_numpy() + events["timeframe"].cast(pl.Float64).to_numpy() / 1e3
    ingest = IngestConfig(context="session_id", item="item_id", time="eventdate+timeframe",
                          context_kind="session")
    table = _table(events["session_id"], events["item_id"], time)
    log = build_log(table, ingest, str(root))
    categories = read_table(root / "product-categories.csv")
    return Dataset("diginetica", log, ingest,
                   {"category": _labels(categories["itemId"], categories["categoryId"])},
                   "view sessions by eventdate+timeframe: split by last view time",
                   _with_order(table, time), "eventdate + timeframe")


DATASETS = tuple(ADAPTERS)
