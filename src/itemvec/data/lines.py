"""Logs with one context per line: ``sequences`` (``user item item ...``) and ``baskets``.

Sequential-recommendation data sets (Amazon ``Beauty.txt``) write one user per line, the first
token the user, the rest the items in order; basket data sets (groceries) write one basket per
line, items only, so the line number is the basket id. Both are split here into one row per
event; the caller (``ingest``) validates, orders and encodes them like any other table.
"""

from __future__ import annotations

import polars as pl

LAYOUTS = ("sequences", "baskets")


def separator_for(name: str, sep: str | None) -> str | None:
    """``sep`` when given, else ',' for .csv files, else None (= runs of whitespace)."""
    if sep is not None:
        return None if sep == " " else sep
    return "," if name.endswith(".csv") else None


def line_events(text: str, layout: str, sep: str | None) -> pl.DataFrame:
    """Columns context, item and line (1-based) of every item on every non-blank line, in
    file order; ``sequences`` lines without items are dropped."""
    lines = pl.DataFrame({"text": text.splitlines()}).with_row_index("line", offset=1)
    if sep is None:
        tokens = pl.col("text").str.extract_all(r"\S+")
    else:
        tokens = (pl.col("text").str.split(sep)
                  .list.eval(pl.element().str.strip_chars().str.strip_chars('"'))
                  .list.eval(pl.element().filter(pl.element() != "")))
    lines = lines.select("line", tokens.alias("tokens")).filter(pl.col("tokens").list.len() > 0)
    if layout == "sequences":
        lines = lines.select("line", pl.col("tokens").list.first().alias("context"),
                             pl.col("tokens").list.slice(1).alias("item"))
    else:
        lines = lines.select("line", pl.col("line").cast(pl.String).alias("context"),
                             pl.col("tokens").alias("item"))
    events = lines.explode("item").drop_nulls("item")
    return events.select("context", "item", pl.col("line").cast(pl.Int64))
