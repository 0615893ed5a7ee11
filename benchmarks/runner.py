"""Tune each method on the validation split, score the selected model(s) on test.

Tuning is per task: for i2i and for s2i separately, the (training params, query variant) with
the best HR@20 on the validation queries is selected and that same fitted model is scored on
the test queries. Every fit uses the train split only (as itemvec does: validation serves only
early stopping / selection), so no refit on train+valid.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from benchmarks import methods as registry
from benchmarks.memory import METHOD as MEMORY_METHOD
from benchmarks.memory import PeakMemory
from benchmarks.probes import probe
from benchmarks.protocol import (
    K,
    Prepared,
    encode_hits,
    metrics,
    popularity_strata,
    ranks,
    stratified_hr,
)
from itemvec.evaluation.protocol import TASKS

logger = logging.getLogger(__name__)
HR = f"HR@{K}"


def run_method(data: Prepared, name: str, categories: dict[str, dict[str, str]],
               quick: bool = False, progress=print) -> dict[str, Any]:
    method = registry.get(name)
    grid = method.grid(data, quick)
    best: dict[str, dict] = {}
    tuning, began = [], time.perf_counter()
    for params in grid:
        with PeakMemory() as memory:
            fit_began = time.perf_counter()
            model = method.fit(data, params)
            fit_seconds = time.perf_counter() - fit_began
            variants = method.variants(data, model, quick)
            scores = [{task: metrics(ranks(scorer, data.valid[task]))[HR] for task in TASKS}
                      for _, scorer in variants]
        for (query, scorer), valid in zip(variants, scores, strict=True):
            tuning.append({"params": params, "query": query, "valid": valid,
                           "fit_seconds": round(fit_seconds, 3)})
            for task in TASKS:
                if task not in best or valid[task] > best[task]["valid"]:
                    best[task] = {"valid": valid[task], "params": params, "query": query,
                                  "scorer": scorer, "model": model,
                                  "fit_seconds": fit_seconds, "peak_mib": memory.mib}
        progress(f"  {name} {params}: fit {fit_seconds:.1f}s, peak +{memory.mib:.0f} MiB, "
                 f"best valid " + ", ".join(f"{t} {max(s[t] for s in scores):.4f}"
                                            for t in TASKS))
        del model, variants
    strata = popularity_strata(data.item_counts)
    tasks = {}
    for task in TASKS:
        chosen = best[task]
        rank = ranks(chosen["scorer"], data.test[task])
        tasks[task] = {**metrics(rank), "valid_hr": chosen["valid"],
                       "train_seconds": round(chosen["fit_seconds"], 3),
                       "peak_mib": round(chosen["peak_mib"], 1),
                       "params": chosen["params"], "query": chosen["query"],
                       "by_popularity": stratified_hr(rank, data.test[task].targets, strata),
                       "hits": encode_hits(rank)}
    result = {"method": name, "fits": len(grid), "configs": len(tuning),
              "tuning_seconds": round(time.perf_counter() - began, 3),
              "memory_method": MEMORY_METHOD, "tasks": tasks, "tuning": tuning}
    if name == "itemvec":
        result["model_stats"] = {k: v for k, v in best["s2i"]["model"].stats.items()
                                 if k != "history"}
    vectors = method.item_vectors(best["s2i"]["model"])
    if vectors is not None and categories:
        result["probe"] = {label_set: probe(vectors, data.item_ids, labels, quick=quick)
                           for label_set, labels in categories.items()}
    return result


def dataset_stats(data: Prepared) -> dict[str, Any]:
    log = data.train
    strata = popularity_strata(data.item_counts)
    return {
        "context_kind": "session" if log.ordered else "basket",
        "split": {"train": len(data.split.train), "valid": len(data.split.valid),
                  "test": len(data.split.test), "by_time": bool(data.split.by_time)},
        "train_events": int(log.n_events), "items": int(data.n_items),
        "valid_queries": {t: len(q) for t, q in data.valid.items()},
        "test_queries": {t: len(q) for t, q in data.test.items()},
        "skipped_unknown_test_targets": {t: q.skipped_unknown for t, q in data.test.items()},
        "strata_items": {label: int((strata == i).sum())
                         for i, label in enumerate(("head", "torso", "tail"))},
        "vocabulary_checksum": int(np.frombuffer(
            "\n".join(map(str, data.item_ids)).encode(), dtype=np.uint8).astype(np.int64).sum()),
    }
