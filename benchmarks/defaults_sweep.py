"""Evidence for itemvec's defaults: validation-split HR@20 under training and query variants.

Decisions on defaults are made on the VALIDATION split (the test split stays for the reported
tables in results/). For each data set and each training variant, train once with
``train_on_log(train, valid=valid)``, then score every query variant on the validation queries
(query settings need no retraining).

    python -m benchmarks.defaults_sweep --datasets groceries,movielens-100k,diginetica \\
        --train '{}' '{"temperature": 0.1}' '{"temperature": 0.3}' \\
        --query '{}' '{"evidence_power": 0.25}' '{"popularity_weight": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import DEFAULT_DATA_DIR, load
from itemvec.config import PipelineConfig
from itemvec.evaluation.protocol import TASKS, build_queries, evaluate, split_contexts
from itemvec.train.pipeline import train_on_log, vocabulary_map

VALID_QUERIES = 5000


def sweep(name: str, data_dir: Path, train_variants: list[dict], query_variants: list[dict],
          seed: int = 0) -> list[dict]:
    dataset = load(name, data_dir)
    split = split_contexts(dataset.log, seed=seed)
    train, valid = (dataset.log.subset(np.sort(p)) for p in (split.train, split.valid))
    rows = []
    for variant in train_variants:
        config = PipelineConfig.from_dict({"ingest": dataset.ingest.to_dict(),
                                           "training": variant})
        started = time.perf_counter()
        model = train_on_log(train, config, valid=valid, progress=False)
        seconds = time.perf_counter() - started
        items = model.embeddings.item_ids
        queries = {task: build_queries(valid, vocabulary_map(valid, items), task, seed=seed,
                                       max_queries=VALID_QUERIES) for task in TASKS}
        for query in query_variants:
            scorer = model.embeddings.with_query(**query)
            hr = {task: evaluate(scorer, queries[task])["HR@20"] for task in TASKS}
            rows.append({"dataset": name, "training": variant, "query": query, **hr,
                         "best_epoch": model.stats["best_epoch"], "train_seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| data set | training | query | valid i2i HR@20 | valid s2i HR@20 | best epoch |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | `{json.dumps(r['training'])}` | "
                     f"`{json.dumps(r['query'])}` | {r['i2i']:.4f} | {r['s2i']:.4f} | "
                     f"{r['best_epoch']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="groceries,movielens-100k,diginetica")
    parser.add_argument("--train", nargs="+", default=["{}"], help="training overrides (JSON)")
    parser.add_argument("--query", nargs="+", default=["{}"], help="query overrides (JSON)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, help="append the Markdown table to this file")
    args = parser.parse_args()
    train_variants = [json.loads(t) for t in args.train]
    query_variants = [json.loads(q) for q in args.query]
    rows = [row for name in args.datasets.split(",")
            for row in sweep(name, args.data_dir, train_variants, query_variants)]
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
