"""Human-readable labels of items: the one place that decides which item-table column names them.

Ids such as ``"i17"`` or ``"4711"`` mean nothing to a person reading results; the item table
usually has a column that does. ``label_column`` picks it: the column asked for (``--label COL``),
else the first of ``LABEL_COLUMNS`` present, compared case-insensitively (so movielens' ``Title``
and instacart's ``product_name`` both work). ``--label none`` turns labels off. Every command
and picture that shows items (similar, recommend, explain, search, plots, the web explorer)
asks this module, so they always agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl

from itemvec.data.ingest import align_items
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ItemvecError, UnknownItemError

logger = logging.getLogger(__name__)

# Most specific first: a table with both ``title`` and ``name`` is labelled by its title.
LABEL_COLUMNS = ("title", "product_name", "movie_title", "item_name", "display_name", "name",
                 "label", "description")
NO_LABEL = "none"
OUTSIDE = -2  # an id the model does not know (-1: a model item the table does not list)


def detect_label_column(columns: Sequence[str]) -> str | None:
    """The first column whose lower-cased name is in ``LABEL_COLUMNS`` (None when none is)."""
    by_lower = {}
    for column in columns:
        by_lower.setdefault(column.lower(), column)
    return next((by_lower[name] for name in LABEL_COLUMNS if name in by_lower), None)


def label_column(embeddings: ItemEmbeddings, requested: str | None = None) -> str | None:
    """The item-table column that labels items: ``requested`` (checked), else detected.

    ``requested`` may be ``"none"`` (no labels). A requested column the table lacks is an error
    naming the columns it has, so a typo is not silently shown as unlabelled results.
    """
    table = embeddings.item_table
    columns = [c for c in (table.columns if table is not None else []) if c != "item_id"]
    if requested is None:
        return detect_label_column(columns)
    if requested.lower() == NO_LABEL:
        return None
    if requested in columns:
        return requested
    match = next((c for c in columns if c.lower() == requested.lower()), None)
    if match is not None:
        return match
    raise ItemvecError(f"--label {requested!r}: the bundle's item table has no such column; "
                       f"known: {', '.join(columns) or 'none (train with --items FILE)'}; or "
                       f"use --label none")


def item_labels(embeddings: ItemEmbeddings, ids: Sequence[str],
                column: str | None) -> list[str | None] | None:
    """The label of each id (None for an item the table does not list), or None without a
    label column. Gathers only the given ids' rows, so a request costs the same on a
    million-item table as on a small one."""
    table = embeddings.item_table
    if column is None or table is None or not len(ids):
        return None if column is None or table is None else []
    wanted = [str(i) for i in ids]
    rows = table_rows(embeddings)
    at = np.asarray([_table_row(embeddings, rows, i) for i in wanted], dtype=np.int64)
    labels: list = [None] * len(wanted)
    listed = np.flatnonzero(at >= 0)
    for position, value in zip(listed, table[column].gather(at[listed]).to_list(), strict=True):
        labels[position] = value
    outside = np.flatnonzero(at == OUTSIDE)
    if len(outside):  # ids the model lacks (an explained history's unknown items): look them up
        names = [wanted[p] for p in outside]
        hit = table.select(pl.col("item_id").cast(pl.String), pl.col(column)).filter(
            pl.col("item_id").is_in(names)).unique("item_id", keep="first",
                                                   maintain_order=True)
        text = dict(zip(hit["item_id"].to_list(), hit[column].to_list(), strict=True))
        for position, name in zip(outside, names, strict=True):
            labels[position] = text.get(name)
    return [None if value is None else str(value) for value in labels]


def table_rows(embeddings: ItemEmbeddings) -> np.ndarray:
    """Item-table row of every vocabulary item (-1: not listed; the first row of a repeated id),
    built once per table: a request gathers its rows instead of filtering the whole table."""
    table = embeddings.item_table
    cached = embeddings.__dict__.get("_label_rows")
    if cached is not None and cached[0] is table:
        return cached[1]
    listed = table.select(pl.col("item_id")).with_row_index("row")
    rows = align_items(listed, embeddings.item_ids)["row"].fill_null(-1).cast(pl.Int64).to_numpy()
    embeddings.__dict__["_label_rows"] = (table, rows)
    return rows


def _table_row(embeddings: ItemEmbeddings, rows: np.ndarray, item: str) -> int:
    try:
        return int(rows[embeddings.row(item)])
    except UnknownItemError:
        return OUTSIDE


def label_lookup(embeddings: ItemEmbeddings, column: str | None) -> dict[str, str | None] | None:
    """id -> label for every listed item (built once for a batch of queries), or None."""
    table = embeddings.item_table
    if column is None or table is None:
        return None
    listed = table.select(pl.col("item_id").cast(pl.String), pl.col(column)).unique(
        "item_id", keep="first", maintain_order=True)  # a repeated id: its first row, as served
    return {i: None if v is None else str(v)
            for i, v in zip(listed["item_id"].to_list(), listed[column].to_list(), strict=True)}


def labelled_explanations(results: list[dict], embeddings: ItemEmbeddings,
                          column: str | None) -> list[dict]:
    """Explanations with a ``label`` beside every ``item_id`` (when items have labels)."""
    ids = [r["item_id"] for r in results] + [p["item_id"] for r in results for p in r["history"]]
    labels = item_labels(embeddings, ids, column)
    if labels is None:
        return results
    text = dict(zip(ids, labels, strict=True))
    return [{"item_id": r["item_id"], "label": text[r["item_id"]],
             **{k: v for k, v in r.items() if k not in ("item_id", "history")},
             "history": [{"item_id": p["item_id"], "label": text[p["item_id"]],
                          **{k: v for k, v in p.items() if k != "item_id"}}
                         for p in r["history"]]} for r in results]


def all_labels(embeddings: ItemEmbeddings, column: str | None) -> list[str | None] | None:
    """Labels of every item in vocabulary order (for maps), or None without a label column."""
    if column is None:
        return None
    return item_labels(embeddings, embeddings.item_ids.tolist(), column)
