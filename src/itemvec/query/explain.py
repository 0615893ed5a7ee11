"""Why was an item recommended? The history items that pulled it up, with the evidence.

A recommendation's logit is ``sum_h w_h cos(h, item) / T + popularity``, where ``w_h`` are the
recency weights of the pooled history (they sum to 1). So each history item's share of the score
is exact, not a post-hoc attribution. Beside it we show the raw behavioural evidence from the
bundle's co-occurrence matrix: how often the two items appeared together (weighted count) and
their PMI. A bundle trained with ``--min-support K`` stores no pair seen in fewer than K
distinct contexts, so no evidence shown here rests on fewer than K sessions/baskets/people.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.store.bundle import load_cooccurrence
from itemvec.store.mapped import mapped_cooccurrence
from itemvec.util.errors import BundleError


class Explainer:
    """Explain recommendations of ``embeddings`` with the bundle's co-occurrence evidence."""

    def __init__(self, embeddings: ItemEmbeddings, cooccurrence: sp.csr_matrix | None = None,
                 min_support: int = 1) -> None:
        self.embeddings = embeddings
        self.cooccurrence = None if cooccurrence is None else cooccurrence.tocsr()
        self.min_support = max(1, int(min_support))
        if self.cooccurrence is not None:
            self.row_mass = np.asarray(self.cooccurrence.sum(axis=1)).ravel()
            self.total = float(self.row_mass.sum())

    def evidence(self, a: int, b: int) -> dict[str, float] | None:
        """Co-occurrence count and PMI of rows ``a`` and ``b`` (None when not stored)."""
        if self.cooccurrence is None:
            return None
        count = float(self.cooccurrence[a, b])
        if count <= 0:
            return {"count": 0.0, "pmi": None}
        pmi = math.log(count * self.total / (self.row_mass[a] * self.row_mass[b]))
        return {"count": round(count, 4), "pmi": round(pmi, 4)}

    def explain(self, history: Sequence[str], item: str) -> dict[str, Any]:
        """Each known history item's share of ``item``'s recommendation score, largest first."""
        emb = self.embeddings
        target = emb.row(item)
        rows, skipped = emb.known(history)
        weights = emb.history_weights(len(rows))
        cosines = emb.vectors_of(rows) @ emb.vectors_of(target) if len(rows) else np.zeros(0)
        popularity = float(emb.query.popularity_weight * emb.item_bias[target])
        parts = []
        for row, weight, cosine in zip(rows, weights, cosines, strict=True):
            part = {"item_id": str(emb.item_ids[row]), "weight": round(float(weight), 6),
                    "cosine": round(float(cosine), 6),
                    "contribution": round(float(weight * cosine / emb.temperature), 6)}
            evidence = self.evidence(int(row), target)
            if evidence is not None:
                part.update(evidence)
            parts.append(part)
        parts.sort(key=lambda p: -p["contribution"])
        score = float(np.dot(weights, cosines)) / emb.temperature + popularity if parts else popularity
        return {"item_id": str(item), "score": round(score, 6),
                "popularity": round(popularity, 6), "history": parts, "skipped": skipped,
                "min_support": self.min_support}

    def recommend(self, history: Sequence[str], n: int = 10, **options: Any) -> list[dict]:
        """Recommend for one history and explain each result."""
        ids, _ = self.embeddings.recommend(history, n=n, **options)
        return [self.explain(history, str(i)) for i in ids]


def explainer_for_bundle(embeddings: ItemEmbeddings, bundle,
                         mapped_cache: str | Path | None = None) -> Explainer:
    """An explainer with the bundle's co-occurrence (if stored) and its --min-support.

    With ``mapped_cache`` the matrix is memory-mapped from CSR parts kept there
    (``store.mapped``), not read into this process's memory.
    """
    try:
        matrix = (load_cooccurrence(bundle) if mapped_cache is None
                  else mapped_cooccurrence(bundle, mapped_cache))
    except BundleError:
        matrix = None
    config = embeddings.metadata.get("config", {}) or {}
    support = (config.get("cooccurrence") or {}).get("min_support", 1)
    return Explainer(embeddings, matrix, min_support=support)
