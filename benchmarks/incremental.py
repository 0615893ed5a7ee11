"""Incremental update vs full retrain on movielens-100k and amazon-beauty.

Protocol (results in benchmarks/incremental.md):

1. contexts split 80/10/10 by the time of their last event (``evaluation.protocol.split_contexts``;
   amazon-beauty has no clock, so the split is seeded random);
2. the training events are cut into a *base* 80% and a *new* 20%: movielens by event timestamp
   (a user whose ratings straddle the cut has a base part and a new part); amazon-beauty, which
   has no timestamps, by file position: training users in line order (the S3-Rec preprocessing
   numbers users and items by first appearance), the first ones holding 80% of the events are
   the base;
3. base model: ``train_on_log(base, valid=valid split)``, written as a bundle;
   update: ``itemvec.train.update`` of that bundle with the new part (early stopping on the same valid
   split, and the CLI default: the newest 10% of the new contexts);
   retrain: ``train_on_log(base + new, valid=valid split)``, written as a bundle;
4. every model ranks the same universe (the retrain's items) for the same test queries
   (s2i and i2i, ``build_queries``/``target_ranks``/``metrics_from_ranks``); an item a model does
   not know scores -inf (a miss), unknown history items are skipped. "new-item queries" are the
   test queries whose target was first seen in the new part.

    python benchmarks/incremental.py [--datasets movielens-100k,amazon-beauty] [--repeats 3]
        [--json benchmarks/results/incremental.json]

Times are wall-clock seconds on this machine, median of ``--repeats`` runs, and include reading
and writing the bundles (update: read parent + update + write; retrain: train + write).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.datasets import DEFAULT_DATA_DIR, load  # noqa: E402
from itemvec.config import PipelineConfig, UpdateConfig  # noqa: E402
from itemvec.data.ingest import EventLog  # noqa: E402
from itemvec.evaluation.protocol import build_queries, metrics_from_ranks, split_contexts, target_ranks  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.train.pipeline import save_model, train_on_log, vocabulary_map  # noqa: E402
from itemvec.train.update import load_parent, save_update, update_log  # noqa: E402

logger = logging.getLogger("incremental")
K = 20
TASKS = ("s2i", "i2i")


# -- splitting -----------------------------------------------------------------------------------
def keep_events(log: EventLog, mask: np.ndarray) -> EventLog:
    """``log`` with only the events in ``mask``; contexts left empty are dropped."""
    ctx = np.repeat(np.arange(log.n_contexts), log.lengths())[mask]
    counts = np.bincount(ctx, minlength=log.n_contexts)
    nonempty = counts > 0
    indptr = np.zeros(int(nonempty.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[nonempty], out=indptr[1:])
    return EventLog(item_ids=log.item_ids, context_ids=log.context_ids[nonempty], indptr=indptr,
                    items=log.items[mask], weights=log.weights[mask],
                    times=None if log.times is None else log.times[mask],
                    ordered=log.ordered, source=log.source)


def base_mask(train: EventLog, fraction: float = 0.8) -> np.ndarray:
    """Events of the base part: the oldest ``fraction`` by time, else by file position."""
    if train.times is not None:
        return train.times <= np.quantile(train.times, fraction)
    order = np.argsort([int(c) for c in train.context_ids], kind="stable")  # file line order
    cumulative = np.cumsum(train.lengths()[order])
    base_contexts = order[cumulative <= fraction * train.n_events]
    in_base = np.zeros(train.n_contexts, dtype=bool)
    in_base[base_contexts] = True
    return np.repeat(in_base, train.lengths())


# -- scoring on a shared universe ----------------------------------------------------------------
class Aligned:
    """Scores a model's items on another vocabulary: unknown items -inf, unknown history skipped."""

    def __init__(self, embeddings: ItemEmbeddings, universe: np.ndarray) -> None:
        self.embeddings = embeddings
        self.to_model = np.asarray([embeddings.index.get(str(i), -1) for i in universe])
        self.known = self.to_model >= 0

    def score_histories(self, histories):
        mapped = [self.to_model[h] for h in histories]
        scores = self.embeddings.score_histories([m[m >= 0] for m in mapped])
        out = np.full((len(histories), len(self.to_model)), -np.inf, dtype=np.float64)
        out[:, self.known] = scores[:, self.to_model[self.known]]
        return out


def score(embeddings: ItemEmbeddings, universe: np.ndarray, queries: dict, new_targets: dict) -> dict:
    scorer = Aligned(embeddings, universe)
    out = {}
    for task in TASKS:
        ranks = target_ranks(scorer, queries[task])
        out[task] = _rounded(metrics_from_ranks(ranks, K))
        out[f"{task}_new_items"] = _rounded(metrics_from_ranks(ranks[new_targets[task]], K))
    return out


def _rounded(metrics: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


# -- one data set --------------------------------------------------------------------------------
def run(name: str, data_dir: Path, repeats: int, variants: dict[str, UpdateConfig],
        seed: int = 0, device: str = "cpu") -> dict:
    data = load(name, data_dir)
    log = data.log
    config = PipelineConfig(ingest=data.ingest)
    config.training = config.training.replace(seed=seed, device=device)
    split = split_contexts(log, seed=seed)
    train, valid, test = (log.subset(np.sort(p)) for p in (split.train, split.valid, split.test))
    in_base = base_mask(train)
    base, new = keep_events(train, in_base), keep_events(train, ~in_base)
    base_items = set(base.item_ids[np.unique(base.items)])
    first_seen = {str(i) for i in new.item_ids[np.unique(new.items)]} - base_items
    info = {"events": {"train": train.n_events, "base": base.n_events, "new": new.n_events},
            "contexts": {"base": base.n_contexts, "new": new.n_contexts,
                         "valid": valid.n_contexts, "test": test.n_contexts},
            "items_first_seen_in_new": len(first_seen), "split_by_time": split.by_time}
    logger.info("%s: %s", name, info)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_model = train_on_log(base, config, valid=valid, progress=False)
        save_model(base_model, tmp / "base", config)
        retrain_times, retrain = [], None
        for _ in range(repeats):
            began = time.perf_counter()
            retrain = train_on_log(train, config, valid=valid, progress=False)
            save_model(retrain, tmp / "retrain", config)
            retrain_times.append(time.perf_counter() - began)
        universe = retrain.embeddings.item_ids
        queries = {task: build_queries(test, vocabulary_map(test, universe), task, seed=seed)
                   for task in TASKS}
        new_targets = {task: np.isin(universe[queries[task].targets].astype(str),
                                     list(first_seen)) for task in TASKS}
        info["test_queries"] = {task: len(queries[task]) for task in TASKS}
        info["test_queries_new_item_target"] = {t: int(new_targets[t].sum()) for t in TASKS}
        rows = {"base (no update)": {"seconds": None, "epochs": base_model.stats["epochs_run"],
                                     **score(base_model.embeddings, universe, queries, new_targets)},
                "retrain": {"seconds": round(float(np.median(retrain_times)), 2),
                            "epochs": retrain.stats["epochs_run"],
                            **score(retrain.embeddings, universe, queries, new_targets)}}
        began = time.perf_counter()  # what the update is closest to: no history fine-tuning
        plain_config = config.replace(training=config.training.replace(
            history_epochs=0))
        plain = train_on_log(train, plain_config, valid=valid, progress=False)
        rows["retrain without history fine-tuning (--history-epochs 0)"] = {
            "seconds": round(time.perf_counter() - began, 2), "epochs": plain.stats["epochs_run"],
            **score(plain.embeddings, universe, queries, new_targets)}
        for label, settings in variants.items():
            times, result = [], None
            for _ in range(repeats):
                began = time.perf_counter()
                parent = load_parent(tmp / "base")
                holdout = None if "early stopping on new events" in label else valid
                result = update_log(parent, new, settings, valid=holdout, progress=False)
                save_update(result, tmp / "update", parent)
                times.append(time.perf_counter() - began)
            rows[label] = {"seconds": round(float(np.median(times)), 2),
                           "epochs": result.stats["epochs_run"],
                           "anchors": result.lineage["anchors_trained"],
                           **score(result.embeddings, universe, queries, new_targets)}
    retrain_s = rows["retrain"]["seconds"]
    for row in rows.values():
        if row["seconds"]:
            row["speedup"] = round(retrain_s / row["seconds"], 1)
        row["s2i_HR_vs_retrain"] = round(row["s2i"]["HR@20"] / rows["retrain"]["s2i"]["HR@20"] - 1,
                                         4)
    return {"info": info, "rows": rows}


VARIANTS = {
    "update, 0 epochs (new items placed, no training)": UpdateConfig(epochs=0),
    "update, stored weights, touched anchors, 3 epochs, early stopping on new events "
    "(default before 2026-11-28)": UpdateConfig(start="stored", anchors="touched"),
    "update, stored weights, all anchors, 3 epochs, early stopping on new events":
        UpdateConfig(start="stored"),
    "update, refresh, 2 epochs, early stopping on new events": UpdateConfig(epochs=2),
    "update, refresh, 3 epochs, same valid split as the retrain": UpdateConfig(),
    "**update, refresh, 3 epochs, early stopping on new events (CLI default)**": UpdateConfig(),
}


def render(results: dict) -> str:
    lines = []
    for name, result in results.items():
        lines.append(f"### {name}\n\n{json.dumps(result['info'])}\n")
        lines.append("| model | seconds | speed-up | epochs | s2i HR@20 | s2i NDCG@20 | "
                     "s2i HR vs retrain | i2i HR@20 | i2i NDCG@20 | new-item s2i HR@20 | "
                     "new-item i2i HR@20 |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, row in result["rows"].items():
            lines.append(
                f"| {label} | {row['seconds'] if row['seconds'] is not None else '-'} | "
                f"{row.get('speedup', '-')} | {row['epochs']} | {row['s2i']['HR@20']:.4f} | "
                f"{row['s2i']['NDCG@20']:.4f} | {100 * row['s2i_HR_vs_retrain']:+.1f}% | "
                f"{row['i2i']['HR@20']:.4f} | {row['i2i']['NDCG@20']:.4f} | "
                f"{row['s2i_new_items']['HR@20']:.4f} | {row['i2i_new_items']['HR@20']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="movielens-100k,amazon-beauty")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="training device: cpu, cuda or auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("itemvec").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.datasets.split(","):
        results[name] = run(name, args.data_dir, args.repeats, VARIANTS, device=args.device)
        results[name]["info"].update(threads=args.threads, device=args.device)
        print(render({name: results[name]}), flush=True)
        if args.json is not None:  # after each data set, so a cut-off run keeps what it has
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
