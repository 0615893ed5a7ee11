"""Knowledge-graph triples (head, relation, tail) as an extra item x item training signal.

Two items are related when a triple links them directly (``i1 complements i2``) or when they
share a tail under the same relation (``i1 brand acme`` and ``i2 brand acme``). Each shared tail
spreads one unit of mass over its items' pairs (1 / (degree - 1) per pair), so a large brand does
not drown a small one; tails with more than ``max_tail_degree`` items (``Beauty`` for every
product) say nothing specific and are skipped. The result is scaled to ``weight`` times the mass
of the behaviour co-occurrence matrix and added to it: the objective then explains both.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.data.ingest import read_table
from itemvec.util.errors import DataError

logger = logging.getLogger(__name__)

COLUMNS = ("head", "relation", "tail")


def read_relations(path: str | Path) -> pl.DataFrame:
    """Triples as strings: columns head/relation/tail (else the first three, or head/tail)."""
    path = Path(path)
    frame = read_table(path)
    if not set(COLUMNS) <= set(frame.columns):
        if frame.width == 2:
            frame = frame.rename(dict(zip(frame.columns, ("head", "tail"), strict=True)))
            frame = frame.with_columns(pl.lit("related").alias("relation"))
        elif frame.width >= 3:
            frame = frame.rename(dict(zip(frame.columns[:3], COLUMNS, strict=True)))
        else:
            raise DataError(f"{path}: relations need columns head, relation, tail; "
                            f"columns present: {', '.join(frame.columns)}")
    frame = frame.select([pl.col(c).cast(pl.String).str.strip_chars() for c in COLUMNS])
    bad = frame["head"].is_null() | frame["tail"].is_null()
    if bad.any():
        row = int(bad.arg_true()[0]) + (2 if path.suffix.lower() in (".csv", ".tsv") else 1)
        raise DataError(f"{path}: row {row}: empty head or tail")
    return frame.with_columns(pl.col("relation").fill_null("related"))


def relation_matrix(triples: pl.DataFrame, item_ids: np.ndarray,
                    max_tail_degree: int = 1000) -> sp.csr_matrix:
    """Symmetric item x item edge weights (zero diagonal) over the vocabulary ``item_ids``."""
    n = len(item_ids)
    index = pl.DataFrame({"item": pl.Series([str(i) for i in item_ids], dtype=pl.String),
                          "idx": np.arange(n, dtype=np.int64)})
    heads = triples.join(index.rename({"item": "head"}), on="head", how="inner")
    direct = heads.join(index.rename({"item": "tail", "idx": "tidx"}), on="tail", how="inner")
    edges = sp.coo_matrix((np.ones(direct.height), (direct["idx"].to_numpy(),
                                                    direct["tidx"].to_numpy())), shape=(n, n))
    total = (edges + edges.T).tocsr()
    shared = heads.unique(["idx", "relation", "tail"]).with_columns(
        pl.struct("relation", "tail").rank("dense").cast(pl.Int64).alias("group") - 1)
    if shared.height:
        degree = np.bincount(shared["group"].to_numpy())
        keep_group = (degree >= 2) & (degree <= max_tail_degree)
        skipped = int(((degree > max_tail_degree)).sum())
        if skipped:
            logger.info("relations: skipped %d tails linking more than %d items", skipped,
                        max_tail_degree)
        group = shared["group"].to_numpy()
        keep = keep_group[group]
        value = 1.0 / np.sqrt(degree[group[keep]] - 1.0)
        incidence = sp.csr_matrix((value, (shared["idx"].to_numpy()[keep], group[keep])),
                                  shape=(n, len(degree)))
        total = total + (incidence @ incidence.T).tocsr()
    total = total.tocsr().astype(np.float32)
    total.setdiag(0)
    total.eliminate_zeros()
    logger.info("relations: %d triples touch the vocabulary, %d item pairs linked",
                heads.height, total.nnz // 2)
    return total


def add_relations(cooccurrence: sp.csr_matrix, relations: sp.csr_matrix,
                  weight: float) -> sp.csr_matrix:
    """``cooccurrence + weight * relations`` with relations scaled to the behaviour mass."""
    if weight <= 0 or relations.nnz == 0:
        return cooccurrence
    scale = weight * float(cooccurrence.sum()) / float(relations.sum())
    return (cooccurrence + scale * relations).tocsr().astype(np.float32)
