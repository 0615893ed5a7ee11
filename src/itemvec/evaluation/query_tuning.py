"""Choose query-time settings on the validation slice, after training.

Query settings (how strongly the popularity prior counts, how much a longer history counts as
more evidence, how fast older history items fade) change no weights, so they can be chosen
after training for the price of a few evaluations: coordinate ascent over small grids, scored
by the mean of i2i and s2i HR@20 on held-out contexts. A change must win by a margin, so the
defaults stand unless the data clearly prefers something else. Sessions choose between recency
weights and equal weights this way, and recency has to win by ``RECENCY_MARGIN``: it assumes the
next item is what a history is asked for, while equal weights also serve completing a basket in
any order. (On instacart-sample's cart order, recency gained 3% on held-out next items and cost
7% on held-out basket items; on movielens-100k it gained 23%, on amazon-beauty more:
``benchmarks/results/context_kind.md``.) Baskets have no order: their items always weigh equally.
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
RECENCY_MARGIN = 0.05  # what recency weights must gain over equal weights, relative


def score(embeddings: ItemEmbeddings, query: QueryConfig, queries: dict[str, Queries]) -> float:
    scorer = embeddings.with_query(**query.to_dict())
    return sum(hit_rate(scorer, q) for q in queries.values()) / len(queries)


def handicap(query: QueryConfig) -> float:
    """Divisor of a setting's validation score: recency weights carry ``RECENCY_MARGIN``."""
    return 1.0 + RECENCY_MARGIN if query.recency_half_life > 0 else 1.0


def tune_query(embeddings: ItemEmbeddings, queries: dict[str, Queries], ordered: bool,
               rounds: int = 2) -> tuple[QueryConfig, dict]:
    """Best query settings by coordinate ascent; recency only matters for ordered contexts."""
    best = embeddings.query
    start = score(embeddings, best, queries)
    best_score = start / handicap(best)  # compared with handicaps; reported without
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
                value_score = score(embeddings, candidate, queries) / handicap(candidate)
                trials += 1
                if value_score > best_score * (1 + MARGIN):
                    best, best_score, improved = candidate, value_score, True
        if not improved:
            break
    best_score *= handicap(best)
    logger.info("query tuning: validation HR@20 %.4f -> %.4f with %s", start, best_score,
                best.to_dict())
    return best, {"start": start, "best": best_score, "trials": trials, "chosen": best.to_dict()}
