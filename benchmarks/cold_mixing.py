"""Would another way of scoring cold items beat the calibrated offset? Oracle frontiers on test.

`itemvec train --items` (behaviour-first) scores a cold item in the same ranking as warm items
by ``history query . tower vector / T + regressed logit + one offset``. `cold_start.md` shows
that even the best offset chosen on test cannot lift cold-target HR@20 to 2x category-popularity
without costing warm targets several percent. This script asks whether the *form* of the cold
score is what limits it, by tracing the same warm-vs-cold trade-off for other scorers:

* ``shipped``: the model as trained, its cold offset moved over ``coldstart.OFFSETS``;
* ``tower-query``: cold items scored against a *tower-space* query (the history pooled through
  the tower's vectors) instead of the behaviour query, plus a global offset;
* ``normalised-a``: per-query probabilities. Warm items: the behaviour model's softmax over warm
  items; cold items: ``pi * softmax(a * tower-space logits)`` over cold items only, for
  a in {0.5, 1, 2}, ``log pi`` swept. A query whose tower scores are spread over many cold
  items puts little mass on each, so cold items enter only where the features are confident.

For each scorer: the best cold-target HR@20 whose warm HR@20 stays within a budget of the
warm HR@20 with no cold item ranked (an oracle choice on test: an upper bound for what a
validation-calibrated version could reach). Same protocol, split, hidden items and queries as
`cold_start.py`.

    python -m benchmarks.cold_mixing --datasets groceries,movielens-100k,synth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy.special import log_softmax

from benchmarks.cold_start import (
    CategoryPopularity,
    features_only,
    hidden_split,
    load_side,
    query_sets,
    tradeoff,
)
from itemvec.config import FeatureConfig, PipelineConfig
from itemvec.evaluation.protocol import evaluate
from itemvec.model.features import SideInformation
from itemvec.train.pipeline import train_on_log

BUDGETS = (0.005, 0.02, 0.05, 0.10)
ALPHAS = (0.5, 1.0, 2.0)
K = 20


def hits_at_k(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Target ranked in the top K (ties counted against it, as ``target_ranks``)."""
    target = scores[np.arange(len(targets)), targets]
    return (scores >= target[:, None]).sum(axis=1) - 1 < K


def curve(scores_for, shifts, targets: np.ndarray, warm_rows: np.ndarray) -> list:
    """(shift, warm HR@20, cold HR@20) for each shift of the cold scores."""
    out = []
    for shift in shifts:
        hit = hits_at_k(scores_for(shift), targets)
        out.append((float(shift), float(hit[warm_rows].mean()), float(hit[~warm_rows].mean())))
    return out


def best_within(points: list, base_warm: float, budget: float) -> float:
    return max((c for _, w, c in points if w >= base_warm * (1 - budget)), default=0.0)


def trained(name: str, seed: int):
    """The default behaviour-first model on ``name`` with 10% of items hidden (cold_start's)."""
    data = load_side(name)
    parts = hidden_split(data, seed)
    config = PipelineConfig()
    config.training.device = "cpu"
    table = data.items.filter(pl.col("item_id").is_in(data.log.item_ids.tolist()))
    side = SideInformation(table, data.features or None,
                           config=FeatureConfig(mode="behaviour-first"))
    model = train_on_log(parts.train, config, valid=parts.valid, item_table=table, side=side,
                         progress=False)
    return data, model, parts.test, parts.hidden_ids, table, config


def run(name: str, seed: int = 0) -> dict:
    data, model, test, hidden_ids, table, config = trained(name, seed)
    emb = model.embeddings
    n_warm = int((np.asarray(model.item_counts) > 0).sum())
    queries = query_sets(test, hidden_ids, emb.item_ids, n_warm, seed, 5000)
    histories = [*queries["warm"].histories, *queries["cold"].histories]
    targets = np.concatenate([queries["warm"].targets, queries["cold"].targets])
    warm_rows = np.arange(len(targets)) < len(queries["warm"])
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    shipped = emb.score_histories(histories)
    shipped[rows, np.concatenate(histories)] = -np.inf  # history items are never ranked
    warm_logits = shipped[:, :n_warm]
    tower = features_only(model, config.training.temperature, config.query)
    tower_cold = tower.score_histories(histories)[:, n_warm:]
    base_warm = float(hits_at_k(warm_logits[warm_rows], targets[warm_rows]).mean())
    category = CategoryPopularity(emb.item_ids, n_warm, model.item_counts, table, data.category,
                                  config.query.recency_half_life)
    baseline = evaluate(category, queries["cold"], K)["HR@20"]
    curves = {"shipped": [(float(k), *v) for k, v in
                          tradeoff(emb, queries, n_warm)["curve"].items()]}
    curves["tower-query"] = curve(
        lambda s: np.concatenate([warm_logits, tower_cold + s], axis=1),
        np.arange(-8, 4.01, 0.5), targets, warm_rows)
    warm_log_p = log_softmax(warm_logits, axis=1)
    for alpha in ALPHAS:
        cold_log_p = log_softmax(alpha * tower_cold, axis=1)
        curves[f"normalised-{alpha:g}"] = curve(
            lambda s, c=cold_log_p: np.concatenate([warm_log_p, c + s], axis=1),
            np.arange(-8, 0.01, 0.5), targets, warm_rows)
    frontier = {label: {f"{b:g}": best_within(points, base_warm, b) for b in BUDGETS}
                for label, points in curves.items()}
    return {"dataset": name, "queries": {k: len(q) for k, q in queries.items()},
            "warm_without_cold": base_warm, "category_popularity_cold": baseline,
            "frontier": frontier, "curves": curves}


def markdown(results: list[dict]) -> str:
    lines = ["| data set | scorer | " + " | ".join(f"warm budget {b:.1%}" for b in BUDGETS)
             + " |", "|---|---|" + "---|" * len(BUDGETS)]
    for r in results:
        base = max(r["category_popularity_cold"], 1e-12)
        for label, best in r["frontier"].items():
            cells = [f"{v:.3f} ({v / base:.2f}x)" for v in best.values()]
            lines.append(f"| {r['dataset']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="groceries,movielens-100k,synth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_mixing.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [run(name, args.seed) for name in args.datasets.split(",")]
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
