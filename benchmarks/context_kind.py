"""Baskets or sessions: does ``--context-kind auto`` pick the better kind from the data?

    python -m benchmarks.context_kind [--datasets ...] [--seeds 0,1,2] [--out benchmarks/results]

Each data set is given to itemvec *with its order column passed as ``--time``*, as a user with
that column would: the position in the basket for groceries (catalogue order), the cart order
for instacart-sample, the timestamp for movielens-100k and diginetica, the position in the
user's line for amazon-beauty. itemvec is trained three times on the train contexts, as
``itemvec train`` runs (selection on the newest 10%, then the refit): ``--context-kind auto``,
``session`` and ``basket``. Every model is scored on the same test queries, built as the data
set is (``benchmarks.datasets``): held-out baskets (one item left out) for groceries and
instacart, next items for the three sequence sets. Test HR@20, full ranking, averaged over the
split seeds of the randomly split sets (a split by time, movielens-100k and diginetica, does not
depend on the seed: one run). Writes ``context_kind.md`` and ``context_kind.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks import datasets as data_sets  # noqa: E402
from benchmarks.methods import on_vocabulary  # noqa: E402
from benchmarks.protocol import metrics, prepare, ranks  # noqa: E402
from itemvec.config import IngestConfig, PipelineConfig  # noqa: E402
from itemvec.data.ingest import build_log  # noqa: E402
from itemvec.evaluation.protocol import TASKS  # noqa: E402
from itemvec.train.pipeline import train_on_log  # noqa: E402
from itemvec.util.files import atomic_write_bytes  # noqa: E402

KINDS = ("auto", "session", "basket")
ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.99  # auto / the better explicit kind, on every data set and task


def train_kind(dataset: data_sets.Dataset, train_contexts: np.ndarray, kind: str):
    """itemvec on the train contexts with the order column as time, as ``kind``."""
    table = dataset.events.filter(pl.col("context").is_in(pl.Series(train_contexts).implode()))
    ingest = IngestConfig(context="context", item="item", time="order", context_kind=kind)
    log = build_log(table.rename({"order": "time"}), ingest, dataset.name)
    began = time.perf_counter()
    model = train_on_log(log, PipelineConfig(ingest=ingest), progress=False)
    return model, log.decision, time.perf_counter() - began


def measure(name: str, data_dir: Path, seed: int) -> dict:
    dataset = data_sets.load(name, data_dir)
    data = prepare(name, dataset.log, PipelineConfig(ingest=dataset.ingest), seed=seed)
    if data.split.by_time and seed != 0:
        return {}  # a split by time does not depend on the seed: one run says it all
    train_contexts = dataset.log.context_ids[data.split.train].astype(str)
    out = {}
    for kind in KINDS:
        model, decision, seconds = train_kind(dataset, train_contexts, kind)
        scorer = on_vocabulary(model.embeddings, data.item_ids)
        out[kind] = {"HR@20": {t: metrics(ranks(scorer, data.test[t]))["HR@20"] for t in TASKS},
                     "queries": {t: len(data.test[t]) for t in TASKS},
                     "train_seconds": round(seconds, 1), "decision": decision.to_dict()}
        print(f"{name} seed {seed} {kind}: " + ", ".join(
            f"{t} {v:.4f}" for t, v in out[kind]["HR@20"].items())
            + f" ({seconds:.0f}s)" + (f" -> {decision.kind}: {decision.reason}"
                                      if kind == "auto" else ""), flush=True)
    return out


def summary(runs: list[dict]) -> dict:
    """Mean HR@20 per kind and task over seeds, auto's choices, and auto / better kind."""
    mean = {kind: {t: float(np.mean([r[kind]["HR@20"][t] for r in runs])) for t in TASKS}
            for kind in KINDS}
    ratio = {t: mean["auto"][t] / max(mean["session"][t], mean["basket"][t]) for t in TASKS}
    return {"mean": mean, "ratio": ratio,
            "chosen": [r["auto"]["decision"]["kind"] for r in runs],
            "reason": runs[0]["auto"]["decision"]["reason"]}


def markdown(results: dict) -> str:
    lines = ["| data set | order passed as --time | seeds | task | session | basket | auto | "
             "auto chose | auto / better |", "|---|---|---|---|---:|---:|---:|---|---:|"]
    for name, block in results.items():
        s = block["summary"]
        chosen = ", ".join(sorted(set(s["chosen"])))
        for task in TASKS:
            m = s["mean"]
            seeds = ",".join(map(str, block.get("seeds") or range(len(block["runs"]))))
            lines.append(f"| {name} | {block['order']} | {seeds} | {task} | "
                         f"{m['session'][task]:.4f} | "
                         f"{m['basket'][task]:.4f} | {m['auto'][task]:.4f} | {chosen} | "
                         f"{s['ratio'][task]:.3f} |")
    worst = min(r for b in results.values() for r in b["summary"]["ratio"].values())
    lines += ["", f"Worst auto / better kind over every cell: **{worst:.3f}** (target "
              f">= {TARGET}).", "", "Why auto chose what it chose (first seed):", ""]
    lines += [f"- **{name}**: {block['summary']['reason']}" for name, block in results.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(data_sets.DATASETS))
    parser.add_argument("--data-dir", type=Path, default=data_sets.DEFAULT_DATA_DIR)
    parser.add_argument("--seeds", default="0,1,2", help="split seeds, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild context_kind.md from context_kind.json without training")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    path = args.out / "context_kind.json"
    results = json.loads(path.read_text()) if path.is_file() else {}  # other sets' runs stay
    if not args.report_only:
        for name in args.datasets.split(","):
            runs = [run for seed in seeds if (run := measure(name, args.data_dir, seed))]
            order = data_sets.load(name, args.data_dir).order_note
            results[name] = {"order": order, "runs": runs, "summary": summary(runs),
                             "seeds": [seed for seed in seeds][:len(runs)]}
            args.out.mkdir(parents=True, exist_ok=True)  # each set as it finishes
            atomic_write_bytes(path, json.dumps(results, indent=1).encode())
    header = ("# Baskets or sessions: --context-kind auto against both explicit kinds\n\n"
              "Command: `python -m benchmarks.context_kind --datasets NAME --seeds S` (each data "
              "set's seeds in the table; runs of several commands merge into one JSON). Test "
              "HR@20 (full ranking), mean over the split seeds (one run for the sets split by "
              "time, whose split does not depend on the seed); each data set is scored on its "
              "own protocol (held-out basket items for groceries and instacart-sample, next "
              "items for the sequence sets), whatever kind the model "
              "was trained as.\n\n")
    atomic_write_bytes(args.out / "context_kind.md", (header + markdown(results)).encode())


if __name__ == "__main__":
    main()
