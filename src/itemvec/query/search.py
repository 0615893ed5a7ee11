"""Search: by item id, by vector, and by text query; plus item-table filters for all queries.

Text search maps the query into embedding space through a pluggable *text encoder*
(``text_encoders`` registry). The built-in ``tfidf`` encoder matches the query against the item
table's text columns (hashed character n-grams, TF-IDF, no vocabulary to store, no network),
takes the best-matching items and returns the neighbourhood of their score-weighted centroid,
so a query finds items that behave like the ones whose titles match, not only the matches. A
feature encoder that embeds text directly can register under another name and replace it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

from itemvec.data.ingest import align_items
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ConfigError, ItemvecError
from itemvec.util.registry import Registry
from itemvec.util.topk import top_k

logger = logging.getLogger(__name__)

text_encoders: Registry = Registry("text encoder")
TEXT_HINTS = ("title", "name", "description", "text", "label", "brand", "category")


# -- item table ------------------------------------------------------------------------------------
def aligned_table(embeddings: ItemEmbeddings) -> pl.DataFrame | None:
    """The item table with one row per item in vocabulary order (None when there is none)."""
    table = embeddings.item_table
    if table is None or "item_id" not in table.columns:
        return None
    cached = embeddings.__dict__.get("_aligned_table")
    if cached is not None and cached[0] is table:
        return cached[1]
    aligned = align_items(table, embeddings.item_ids)
    embeddings.__dict__["_aligned_table"] = (embeddings.item_table, aligned)
    return aligned


def where_mask(embeddings: ItemEmbeddings, where: dict[str, Any]) -> np.ndarray:
    """Items whose column equals the value (or one of a list of values), for every column.

    Values are compared as strings so that ``{"category": "shoes"}`` and ``{"year": 2020}``
    both work whatever the column's type.
    """
    table = aligned_table(embeddings)
    if table is None:
        raise ItemvecError("this model has no item table to filter on; train with --items")
    allowed = np.ones(len(embeddings), dtype=bool)
    for column, value in where.items():
        if column not in table.columns or column == "item_id":
            known = ", ".join(c for c in table.columns if c != "item_id")
            raise ItemvecError(f"unknown item-table column {column!r}; known: {known}")
        values = [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
        hit = table[column].cast(pl.String).is_in(values).fill_null(False).to_numpy()
        allowed &= hit
    return allowed


def item_filter(embeddings: ItemEmbeddings, where: dict[str, Any] | None = None,
                allowed: Sequence[str] | None = None) -> np.ndarray | None:
    """One boolean mask for ``similar_items(filter=...)``: column conditions AND an allow-list
    (e.g. the items in stock). None when there is nothing to filter."""
    mask = None
    if where:
        mask = where_mask(embeddings, where)
    if allowed is not None:
        keep = np.zeros(len(embeddings), dtype=bool)
        keep[embeddings.known(allowed)[0]] = True
        mask = keep if mask is None else mask & keep
    return mask


def text_columns(table: pl.DataFrame | None) -> list[str]:
    """String columns worth searching: named like text, or with mostly distinct values."""
    if table is None:
        return []
    columns = []
    for name, dtype in table.schema.items():
        if name == "item_id" or dtype != pl.String:
            continue
        if any(h in name.lower() for h in TEXT_HINTS) or table[name].n_unique() > table.height / 2:
            columns.append(name)
    return columns


# -- text encoders ---------------------------------------------------------------------------------
@dataclass
class TextQuery:
    """A text query mapped into embedding space, with the items it matched directly."""

    vector: np.ndarray | None
    matches: list[tuple[str, float]] = field(default_factory=list)


class TextEncoder(Protocol):
    name: str

    def encode(self, query: str) -> TextQuery: ...


@text_encoders.register("tfidf")
class TfidfTextEncoder:
    """Hashed char n-gram TF-IDF over the item table's text columns -> centroid of the matches."""

    name = "tfidf"

    def __init__(self, embeddings: ItemEmbeddings, columns: Sequence[str] | None = None,
                 top_matches: int = 20, min_score: float = 0.1,
                 n_features: int = 1 << 18) -> None:
        table = aligned_table(embeddings)
        self.columns = list(columns) if columns else text_columns(table)
        if not self.columns:
            raise ItemvecError("this model has no text to search: its item table has no text "
                               "columns (train with --items and a title/name column)")
        missing = [c for c in self.columns if table is None or c not in table.columns]
        if missing:
            raise ConfigError(f"text column {missing[0]!r} is not in the item table")
        self.embeddings = embeddings
        self.top_matches, self.min_score = top_matches, min_score
        texts = table.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("")
                                            for c in self.columns], separator=" "))
        self.hasher = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 4),
                                        n_features=n_features, alternate_sign=False, norm=None,
                                        lowercase=True)
        self.tfidf = TfidfTransformer(sublinear_tf=True)
        self.matrix = self.tfidf.fit_transform(self.hasher.transform(texts.to_series()
                                                                     .to_list())).tocsr()

    def match(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the items whose text best matches ``query`` and their cosine scores."""
        q = self.tfidf.transform(self.hasher.transform([query]))
        scores = (self.matrix @ q.T).toarray().ravel()
        top = top_k(scores, self.top_matches)
        top = top[scores[top] >= self.min_score * max(float(scores[top[0]]), 1e-12)]
        top = top[scores[top] > 0]
        return top, scores[top]

    def encode(self, query: str) -> TextQuery:
        rows, scores = self.match(query)
        if len(rows) == 0:
            return TextQuery(None, [])
        vector = scores @ self.embeddings.vectors[rows]
        ids = self.embeddings.item_ids[rows].astype(str)
        return TextQuery(vector, [(str(i), round(float(s), 6)) for i, s in
                                  zip(ids, scores, strict=True)])


# -- the search facade ------------------------------------------------------------------------------
class ItemSearch:
    """Search a model by id, by vector or by text; the text encoder is built on first use."""

    def __init__(self, embeddings: ItemEmbeddings, text_encoder: str = "tfidf",
                 **encoder_params: Any) -> None:
        self.embeddings = embeddings
        self.encoder_name = text_encoder
        self.encoder_params = encoder_params
        self._encoder: TextEncoder | None = None
        self._lock = threading.Lock()

    @property
    def has_text(self) -> bool:
        return bool(text_columns(aligned_table(self.embeddings))) or self._encoder is not None

    def encoder(self) -> TextEncoder:
        with self._lock:
            if self._encoder is None:
                factory = text_encoders.get(self.encoder_name)
                self._encoder = factory(self.embeddings, **self.encoder_params)
            return self._encoder

    def by_id(self, item: str, n: int = 10, **filters: Any):
        return self.embeddings.similar_items(item, n=n, **filters)

    def by_vector(self, vector: np.ndarray, n: int = 10, **filters: Any):
        vector = np.asarray(vector, dtype=np.float32).ravel()
        if vector.shape[0] != self.embeddings.dim:
            raise ItemvecError(f"vector has {vector.shape[0]} values; this model's vectors have "
                               f"{self.embeddings.dim}")
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise ItemvecError("vector must be finite and not all zeros")
        return self.embeddings.similar_to_vector(vector, n=n, **filters)

    def by_text(self, query: str, n: int = 10, **filters: Any
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]:
        """(ids, scores, direct matches); empty arrays when nothing matches the text."""
        if not query.strip():
            raise ItemvecError("empty search query")
        encoded = self.encoder().encode(query)
        if encoded.vector is None or not np.any(encoded.vector):
            return np.zeros(0, dtype=str), np.zeros(0, np.float32), []
        ids, scores = self.embeddings.similar_to_vector(encoded.vector, n=n, **filters)
        return ids, scores, encoded.matches
