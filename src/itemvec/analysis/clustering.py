"""Cluster items in embedding space and describe each cluster in words a person can check.

k-means on unit vectors (cosine geometry); MiniBatchKMeans above 50k items. The summary of a
cluster lists its most frequent items (or those nearest the centroid without counts) and, for
each categorical column of the item table, the dominant value and its share: a cluster that is
90% one category is a cluster someone can name.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl
from sklearn.cluster import KMeans, MiniBatchKMeans

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.search import aligned_table, text_columns
from itemvec.util.errors import ItemvecError

logger = logging.getLogger(__name__)
MINIBATCH_ABOVE = 50_000


def kmeans(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, unit centroids)."""
    if len(vectors) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=4)
    labels = model.fit_predict(vectors)
    centres = model.cluster_centers_.astype(np.float32)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return labels.astype(np.int64), centres


def categorical_columns(table: pl.DataFrame | None) -> list[str]:
    """Columns that label groups of items: strings with few distinct values (not free text)."""
    if table is None:
        return []
    text = set(text_columns(table)) - {c for c in table.columns if "categ" in c.lower()
                                       or "brand" in c.lower() or "genre" in c.lower()}
    return [name for name, dtype in table.schema.items()
            if name != "item_id" and name not in text and dtype in (pl.String, pl.Categorical)
            and table[name].n_unique() <= max(2, table.height // 2)]


def cluster(embeddings: ItemEmbeddings, k: int, seed: int = 0, top: int = 5
            ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(assignments: item_id, cluster, similarity; summary: one row per cluster)."""
    if not 2 <= k <= len(embeddings):
        raise ItemvecError(f"-k must be between 2 and the number of items ({len(embeddings)}), "
                           f"got {k}")
    labels, centres = kmeans(embeddings.vectors, k, seed)
    similarity = np.einsum("ij,ij->i", embeddings.vectors, centres[labels])
    assignments = pl.DataFrame({
        "item_id": pl.Series([str(i) for i in embeddings.item_ids], dtype=pl.String),
        "cluster": labels, "similarity": np.round(similarity, 6).astype(np.float32)})
    return assignments, summarise(embeddings, labels, similarity, top)


def summarise(embeddings: ItemEmbeddings, labels: np.ndarray, similarity: np.ndarray,
              top: int = 5) -> pl.DataFrame:
    table = aligned_table(embeddings)
    counts = table["count"].to_numpy() if table is not None and "count" in table.columns else None
    names = _display_names(embeddings, table)
    columns = categorical_columns(table)
    rows: list[dict[str, Any]] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        key = counts[members] if counts is not None else similarity[members]
        best = members[np.argsort(-key, kind="stable")[:top]]
        row: dict[str, Any] = {"cluster": int(c), "size": int(len(members)),
                               "cohesion": round(float(similarity[members].mean()), 4),
                               "top_items": "; ".join(names[i] for i in best)}
        for column in columns:
            values = table[column].gather(members).drop_nulls()
            if len(values):
                counted = values.value_counts(sort=True)
                row[f"{column}_top"] = str(counted[0, column])
                row[f"{column}_share"] = round(counted[0, "count"] / len(members), 4)
        rows.append(row)
    return pl.DataFrame(rows).sort("size", descending=True)


def _display_names(embeddings: ItemEmbeddings, table: pl.DataFrame | None) -> list[str]:
    ids = [str(i) for i in embeddings.item_ids]
    text = [c for c in text_columns(table) if any(h in c.lower() for h in ("title", "name"))]
    if table is None or not text:
        return ids
    titles = table[text[0]].cast(pl.String).to_list()
    return [f"{i} ({t})" if t else i for i, t in zip(ids, titles, strict=True)]
