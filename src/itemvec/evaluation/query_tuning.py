"""Choose query-time settings on the validation slice, after training.

Query settings (how strongly the popularity prior counts, how much a longer history counts as
more evidence, how fast older history items fade) change no weights, so they can be chosen
after training for the price of a few evaluations: coordinate ascent over small grids, scored
by the mean of i2i and s2i HR@20 on held-out contexts. A change must win by a margin, so the
defaults stand unless the data clearly prefers something else. Sessions choose between recency
weights and equal weights this way; baskets have no order, so their items always weigh equally.
"""

from __future__ import annotations

import logging

from itemvec.config import QueryConfig
from itemvec.evaluation.protocol import Queries, hit_rate
from itemvec.query.embeddings import ItemEmbeddings

logger = logging.getLogger(__name__)

GRIDS: dict[str, tuple[float, ...]] = {
    "popularity_weight": (0.5, 0.75, 1.0, 1.25, 1.5),
    "evidence_power": (0.0, 0.25, 0.5),
    "recency_half_life": (0.0, 1.0, 3.0, 8.0),  # 0: equal weights (sessions without recency)
}
MARGIN = 0.005  # relative improvement a setting needs over the current best


def score(embeddings: ItemEmbeddings, query: QueryConfig, queries: dict[str, Queries]) -> float:
    scorer = embeddings.with_query(**query.to_dict())
    return sum(hit_rate(scorer, q) for q in queries.values()) / len(queries)


def tune_query(embeddings: ItemEmbeddings, queries: dict[str, Queries], ordered: bool,
               rounds: int = 2) -> tuple[QueryConfig, dict]:
    """Best query settings by coordinate ascent; recency only matters for ordered contexts."""
    best = embeddings.query
    best_score = start = score(embeddings, best, queries)
    trials = 1
    for _ in range(rounds):
        improved = False
        for name, values in GRIDS.items():
            if name == "recency_half_life" and not ordered:
                continue
            for value in values:
                candidate = best.replace(**{name: value})
                if candidate == best:
                    continue
                value_score = score(embeddings, candidate, queries)
                trials += 1
                if value_score > best_score * (1 + MARGIN):
                    best, best_score, improved = candidate, value_score, True
        if not improved:
            break
    logger.info("query tuning: validation HR@20 %.4f -> %.4f with %s", start, best_score,
                best.to_dict())
    return best, {"start": start, "best": best_score, "trials": trials, "chosen": best.to_dict()}
