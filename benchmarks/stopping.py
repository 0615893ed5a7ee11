"""Early-stopping rules, chosen from recorded validation curves rather than by feel.

    python -m benchmarks.stopping record                 # 5 data sets -> results/stopping_curves.json
    python -m benchmarks.stopping record --events benchmarks/_work/synth10m_20k.parquet
    python -m benchmarks.stopping simulate               # the table in results/stopping.md

``record`` trains itemvec's default model for 40 epochs without stopping and scores, at the
spectral start (epoch 0) and after every epoch, the validation s2i HR@20 that early stopping sees
and the test s2i and i2i HR@20 (default query settings, no query tuning). ``simulate`` replays
stopping rules on those curves: which epoch each rule keeps, where it stops, and the test HR@20
of the kept epoch relative to the old rule (every 2 epochs, patience 5 evaluations, the start
not a candidate).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
CURVES = RESULTS / "stopping_curves.json"
DATASETS = ("groceries", "instacart-sample", "movielens-100k", "amazon-beauty", "diginetica")
EPOCHS = 40


def _prepared(name: str, data_dir: str | None):
    """(train log restricted to its vocabulary, valid log, test queries, config)."""
    from itemvec.config import IngestConfig, PipelineConfig

    if name.endswith((".parquet", ".csv")):  # an `itemvec synth` log, split as benchmarks.scale
        from itemvec.counting.cooccurrence import prune_rare_items
        from itemvec.data.ingest import read_events, restrict_vocabulary
        from itemvec.evaluation.protocol import build_queries, split_contexts
        from itemvec.train.pipeline import vocabulary_map

        config = PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id",
                                                    time="ts"))
        log = read_events(name, config.ingest)
        split = split_contexts(log, seed=0)
        train, valid, test = (log.subset(np.sort(p)) for p in (split.train, split.valid,
                                                                 split.test))
        train = restrict_vocabulary(train, prune_rare_items(train, config.cooccurrence.min_count))
        mapping = vocabulary_map(test, train.item_ids)
        queries = {t: build_queries(test, mapping, t, seed=0, max_queries=5000)
                   for t in ("s2i", "i2i")}
        return train, valid, queries, config
    from benchmarks.datasets import load
    from benchmarks.protocol import prepare

    dataset = load(name, data_dir) if data_dir else load(name)
    config = PipelineConfig(ingest=dataset.ingest)
    data = prepare(name, dataset.log, config, seed=0)
    return data.train, data.valid_log, data.test, config


def record_curve(name: str, data_dir: str | None = None, epochs: int = EPOCHS) -> dict:
    from itemvec.evaluation.protocol import hit_rate
    from itemvec.model.objectives import build_objective
    from itemvec.query.embeddings import ItemEmbeddings
    from itemvec.train.pipeline import Counted, make_validator, query_settings
    from itemvec.train.trainer import Trainer

    train, valid, test, config = _prepared(name, data_dir)
    counted = Counted.from_log(train, config)
    config.training.epochs, config.training.eval_every = epochs, 1
    config.training.patience, config.training.patience_batches = 10**9, 0  # never stop
    validator = make_validator(valid, counted.item_ids, config)
    query = query_settings(config, counted.ordered)
    curve = {"valid": [], "test_s2i": [], "test_i2i": [], "seconds": []}
    started = time.perf_counter()

    def probe(encoder) -> float:
        curve["seconds"].append(round(time.perf_counter() - started, 2))
        score = validator(encoder)
        vectors, bias = encoder.export()
        scorer = ItemEmbeddings(counted.item_ids, vectors, bias, config.training.temperature,
                                query)
        curve["valid"].append(score)
        for task in ("s2i", "i2i"):
            curve[f"test_{task}"].append(hit_rate(scorer, test[task]))
        return score

    Trainer(config.training, probe, progress=False).fit(counted.matrix)
    batches = len(build_objective(counted.matrix, config.training, torch.device("cpu")))
    return {"items": len(counted.item_ids), "batches_per_epoch": batches,
            "train_events": int(counted.events), **curve}


def stopping_point(valid: list[float], batches: int, every: int = 1, patience: int = 1,
                   patience_batches: int = 0, score_start: bool = True) -> tuple[int, int]:
    """(kept epoch, last epoch trained) of ``Trainer``'s rule replayed on a recorded curve."""
    from itemvec.train.trainer import patience_spent

    last = len(valid) - 1
    best, kept, stale = (valid[0], 0, 0) if score_start else (-np.inf, 0, 0)
    for epoch in range(1, last + 1):
        if epoch % every and epoch != last:
            continue
        if valid[epoch] > best:
            best, kept, stale = valid[epoch], epoch, 0
        else:
            stale += 1
        if patience_spent(stale, epoch - kept, batches, patience, patience_batches):
            return kept, epoch
    return kept, last


RULES = {
    "old: every 2 epochs, patience 5, start not scored":
        dict(every=2, patience=5, score_start=False),
    "every 2, patience 5, start scored": dict(every=2, patience=5),
    "every epoch, patience 10": dict(patience=10),
    "every epoch, patience 3": dict(patience=3),
    "every epoch, patience 1 + 120 batches": dict(patience_batches=120),
    "every 2, patience 2 + 60 batches": dict(every=2, patience=2, patience_batches=60),
    "every 2, patience 2 + 120 batches (default)": dict(every=2, patience=2,
                                                        patience_batches=120),
    "every 2, patience 2 + 240 batches": dict(every=2, patience=2, patience_batches=240),
}


def simulate(curves: dict) -> str:
    names = list(curves)
    base = {n: stopping_point(curves[n]["valid"], curves[n]["batches_per_epoch"],
                              **RULES[next(iter(RULES))])[0] for n in names}
    head = "| rule | geo. mean | " + " | ".join(f"{n} (kept/stop, s2i, i2i)" for n in names)
    lines = [head + " |", "|---" * (len(names) + 2) + "|"]
    for label, rule in RULES.items():
        cells, ratios = [], []
        for n in names:
            c = curves[n]
            kept, stop = stopping_point(c["valid"], c["batches_per_epoch"], **rule)
            r = [c[f"test_{t}"][kept] / c[f"test_{t}"][base[n]] for t in ("s2i", "i2i")]
            ratios += r
            cells.append(f"{kept}/{stop}, {r[0]:.3f}, {r[1]:.3f}")
        geo = float(np.exp(np.mean(np.log(ratios))))
        lines.append(f"| {label} | {geo:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("record", "simulate"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--events", help="also record an `itemvec synth` Parquet log")
    parser.add_argument("--data-dir")
    parser.add_argument("--curves", type=Path, default=CURVES)
    args = parser.parse_args()
    from itemvec.util.files import atomic_write_bytes

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    if args.task == "simulate":
        print(simulate(json.loads(args.curves.read_text())))
        return
    curves = json.loads(args.curves.read_text()) if args.curves.exists() else {}
    names = [n for n in args.datasets.split(",") if n] + ([args.events] if args.events else [])
    for name in names:
        key = Path(name).stem if args.events and name == args.events else name
        curves[key] = record_curve(name, args.data_dir)
        atomic_write_bytes(args.curves, json.dumps(curves, indent=1).encode())
        print(key, "valid", np.round(curves[key]["valid"], 4).tolist())


if __name__ == "__main__":
    main()
