"""Cost of labelling one answer's 10 ids on a 1M-row item table (``query.labels.item_labels``).

    python -m benchmarks.label_lookup [--items 1000000] [--calls 50]

Compares the lookup by a filter over the whole table (what every request did before) with the
gather through the vocabulary -> table-row map (built once per table), and checks both agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from itemvec.query import labels
from itemvec.query.embeddings import ItemEmbeddings


def by_filter(embeddings: ItemEmbeddings, wanted: list[str]) -> list[str | None]:
    table = embeddings.item_table
    found = table.select(pl.col("item_id").cast(pl.String), pl.col("title")).filter(
        pl.col("item_id").is_in(wanted))
    text = dict(zip(found["item_id"].to_list(), found["title"].to_list(), strict=True))
    return [text.get(i) for i in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    ids = [f"i{i}" for i in range(args.items)]
    table = pl.DataFrame({"item_id": ids[::-1], "title": [f"Product {i}" for i in
                                                          range(args.items)]})
    embeddings = ItemEmbeddings(ids, np.ones((args.items, 4), np.float32), item_table=table)
    began = time.perf_counter()
    labels.item_labels(embeddings, ids[:1], "title")
    print(f"first call (builds the row map): {time.perf_counter() - began:.3f} s")
    rng = np.random.default_rng(0)
    queries = [[f"i{j}" for j in rng.integers(args.items, size=10)] for _ in range(args.calls)]
    for name, lookup in (("filter over the table", by_filter),
                         ("gather through the row map",
                          lambda e, w: labels.item_labels(e, w, "title"))):
        began = time.perf_counter()
        answers = [lookup(embeddings, wanted) for wanted in queries]
        each = (time.perf_counter() - began) / args.calls * 1000
        print(f"{name}: {each:.3f} ms per 10-id answer")
        assert answers == [by_filter(embeddings, wanted) for wanted in queries]


if __name__ == "__main__":
    main()
