"""What an item-table column holds: categories, numbers, free text, or nothing worth using.

One guess shared by the feature reader (which columns become features) and the search (which
columns hold text, which hold values items share), so both read a table alike.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def infer_kind(series: pl.Series, separator: str = "|") -> str | None:
    """Guess a column's kind; None for columns that cannot help (constant, id-like, empty)."""
    values = series.drop_nulls()
    if len(values) == 0:
        return None
    if isinstance(series.dtype, pl.List | pl.Array):
        return "cat"
    n_distinct = values.n_unique()
    if n_distinct <= 1:
        return None
    distinct_ratio = n_distinct / len(values)
    numbers = _as_float(values)
    if numbers is not None:
        integral = bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))
        return "cat" if integral and distinct_ratio < 0.5 else "num"
    text = values.cast(pl.String)
    if float(text.str.contains(separator, literal=True).mean()) >= 0.05:
        return "cat"
    words = float(text.str.count_matches(r"\S+").mean())
    spaced = float(text.str.contains(" ", literal=True).mean())
    if words >= 2.5 or (distinct_ratio > 0.5 and spaced > 0.5):
        return "text"
    if distinct_ratio > 0.9 and len(values) > 50:
        return None  # id-like (codes, URLs): one value per item carries nothing to share
    return "cat"


def _as_float(values: pl.Series) -> np.ndarray | None:
    if values.dtype.is_numeric():
        return values.cast(pl.Float64).to_numpy()
    if values.dtype != pl.String:
        return None
    parsed = values.str.strip_chars().cast(pl.Float64, strict=False)
    if parsed.null_count() > 0.05 * len(values):
        return None
    return parsed.drop_nulls().to_numpy()


def mostly_urls(column: pl.Series) -> bool:
    """Links (an IMDb URL column): neither words of a title nor values items share."""
    values = column.drop_nulls()
    return (values.dtype == pl.String and len(values) > 0
            and values.str.contains(r"^https?://").mean() > 0.5)
