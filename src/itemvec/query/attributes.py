"""Attribute similarity: items that share rare values of the item table's categorical columns.

A text query's neighbours are what people do with its matches (the model's cosine) *and* what
the matches are (genre, category, brand). Behaviour alone can miss the obvious: in MovieLens,
what people rated next to Star Wars is the 1997 releases, not The Empire Strikes Back. The two
rankings are merged by reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009), which
needs no weight between scores on different scales: an item's fused score is
``1/(K + behaviour rank) + 1/(K + attribute rank)`` with the paper's K = 60, each list cut at
its top 200 (``search.FILL_POOL``); an item in one list only gets that list's term alone.

Attributes are the columns ``infer_kind`` types as categorical (flags, category, brand, a
release date), minus titles. Each (column, value) pair is a token weighted by its inverse
document frequency ``log((1 + items) / (1 + items with it))``, so a value nearly every item has
("genre flag = 0") weighs about nothing; rows are unit-normalised, so the similarity of two
items is the cosine of their weighted tokens.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.data.columns import infer_kind, mostly_urls

FUSION_K = 60  # the reciprocal-rank fusion constant of Cormack et al.
SEPARATOR = "|"  # multi-valued cells ("Action|Sci-Fi"), as the feature reader splits them


def attribute_columns(table: pl.DataFrame | None, skip: tuple[str, ...] = ()) -> list[str]:
    """Categorical columns of the item table, without the id and the ``skip`` (title) columns."""
    if table is None:
        return []
    return [c for c in table.columns if c != "item_id" and c not in skip
            and not mostly_urls(table[c]) and infer_kind(table[c], SEPARATOR) == "cat"]


def _cells(series: pl.Series) -> pl.Series:
    """Each cell as a list of string values (split on the separator; empty values dropped)."""
    if isinstance(series.dtype, pl.List | pl.Array):
        return series.cast(pl.List(pl.String))
    return series.cast(pl.String).str.strip_chars().str.split(SEPARATOR)


def _incidence(columns: list[pl.Series], n_rows: int) -> sp.csr_matrix:
    """Rows x distinct (column, value) tokens, 1 where the row holds the value."""
    frames = [pl.DataFrame({"row": np.arange(n_rows), "value": _cells(s)})
              .explode("value").with_columns(pl.lit(i).alias("column"))
              for i, s in enumerate(columns)]
    pairs = (pl.concat(frames).drop_nulls("value").filter(pl.col("value") != "")
             .unique(["row", "column", "value"]))
    key = pl.col("column").cast(pl.String) + "\x1f" + pl.col("value")
    codes = pairs.select(key.rank("dense").cast(pl.Int64) - 1).to_series().to_numpy()
    n_tokens = int(codes.max()) + 1 if len(codes) else 0
    rows = pairs["row"].to_numpy()
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes)),
                         shape=(n_rows, n_tokens))


class AttributeIndex:
    """IDF-weighted, unit-normalised item x attribute-value matrix (one row per item)."""

    def __init__(self, table: pl.DataFrame, columns: list[str]) -> None:
        self.columns = list(columns)
        matrix = _incidence([table[c] for c in self.columns], table.height)
        holders = np.bincount(matrix.indices, minlength=matrix.shape[1])
        idf = np.log((1.0 + table.height) / (1.0 + holders)).astype(np.float32)
        matrix = (matrix @ sp.diags(idf)).tocsr()
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        self.matrix = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix).tocsr()

    def affinity(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Cosine of every item to the ``weights``-weighted sum of the ``rows``' attributes."""
        query = sp.csr_matrix(np.asarray(weights, np.float32)) @ self.matrix[np.asarray(rows)]
        norm = float(np.sqrt(query.multiply(query).sum()))
        if norm == 0.0:
            return np.zeros(self.matrix.shape[0], np.float32)
        return np.asarray((self.matrix @ (query.T / norm)).todense()).ravel().astype(np.float32)


def rank_among(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """1 + how many of ``pool`` beat each value (ties share the best rank)."""
    ordered = np.sort(pool)
    return 1 + len(ordered) - np.searchsorted(ordered, values, side="right")


def placed(candidates: np.ndarray, listed: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The ``ranks`` of the ``listed`` rows at their places among the sorted ``candidates``
    (a superset); inf for candidates not in the list."""
    out = np.full(len(candidates), np.inf)
    out[np.searchsorted(candidates, listed)] = ranks
    return out


def fused(behaviour_rank: np.ndarray, attribute_rank: np.ndarray) -> np.ndarray:
    """Reciprocal-rank fusion of two 1-based rankings; an item outside a list (rank inf)
    gets nothing from it."""
    return 1.0 / (FUSION_K + behaviour_rank) + 1.0 / (FUSION_K + attribute_rank)
