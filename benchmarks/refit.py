"""Does training the final model on every context pay? itemvec three ways on each data set.

    python -m benchmarks.refit [--datasets ...] [--out benchmarks/results]

- ``itemvec-refit``: what ``itemvec train`` does: the newest 10% of the train split chooses
  the schedule (epochs, history fine-tuning, query settings), then the final model is refit
  on every train context with it;
- ``itemvec-no-refit``: the same selection, final model trained on the older 90% only (what
  ``itemvec train`` did before the refit; items seen only in the newest 10% are unknown to it:
  zero vector, never recommended);
- and, from the main ``results.json``, ``itemvec`` as the main table runs it: selection on the
  benchmark's validation split, trained on every train context.

None of them trains on the benchmark's validation or test split. Writes ``refit.md`` and
``refit.json`` (test HR@20 per task, train seconds, items in the model).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import datasets as data_sets  # noqa: E402
from benchmarks.protocol import prepare  # noqa: E402
from benchmarks.runner import run_method  # noqa: E402
from itemvec.config import PipelineConfig  # noqa: E402
from itemvec.util.files import atomic_write_bytes  # noqa: E402

VARIANTS = ("itemvec-refit", "itemvec-no-refit")  # "itemvec": from the main results.json
ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, data_dir: Path) -> dict:
    dataset = data_sets.load(name, data_dir)
    data = prepare(name, dataset.log, PipelineConfig(ingest=dataset.ingest))
    rows = {}
    for variant in VARIANTS:
        began = time.perf_counter()
        entry = run_method(data, variant, {}, progress=lambda text: None)
        rows[variant] = {"tasks": {t: {"HR@20": v["HR@20"], "NDCG@20": v["NDCG@20"]}
                                   for t, v in entry["tasks"].items()},
                         "train_seconds": entry["tasks"]["s2i"]["train_seconds"],
                         "wall_seconds": round(time.perf_counter() - began, 1)}
        print(f"{name} {variant}: " + ", ".join(
            f"{t} {v['HR@20']:.4f}" for t, v in rows[variant]["tasks"].items())
            + f" ({rows[variant]['train_seconds']:.1f}s)", flush=True)
    return {"items": int(data.n_items), "by_time": bool(data.split.by_time), "variants": rows}


def gain_lines(results: dict) -> list[str]:
    """Geometric mean of refit / no refit over the cells of time-split and random-split sets."""
    lines = []
    for label, by_time in (("time-split", True), ("random-split", False)):
        ratios = [block["variants"][VARIANTS[0]]["tasks"][t]["HR@20"]
                  / block["variants"][VARIANTS[1]]["tasks"][t]["HR@20"]
                  for block in results.values() if block["by_time"] == by_time
                  for t in ("i2i", "s2i")]
        if ratios:
            mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            lines.append(f"Refit / no refit, geometric mean over the {len(ratios)} cells of "
                         f"{label} sets: **{mean:.3f}**.")
    return lines


def markdown(results: dict, main: dict) -> str:
    lines = ["| data set | split | task | " + " | ".join(VARIANTS) + " | refit / no refit | "
             "itemvec (main table) |", "|---|---|---|" + "---|" * (len(VARIANTS) + 2)]
    for name, block in results.items():
        split = "time" if block["by_time"] else "random"
        for task in ("i2i", "s2i"):
            values = [block["variants"][v]["tasks"][task]["HR@20"] for v in VARIANTS]
            ratio = values[0] / values[1] if values[1] else float("nan")
            table = main.get(name, {}).get("methods", {}).get("itemvec", {})
            ours = table.get("tasks", {}).get(task, {}).get("HR@20")
            lines.append(f"| {name} | {split} | {task} | " + " | ".join(f"{v:.4f}" for v in values)
                         + f" | {ratio:.3f} | " + ("–" if ours is None else f"{ours:.4f}") + " |")
    lines += ["", *gain_lines(results)]
    lines += ["", "| data set | " + " | ".join(f"{v} train s" for v in VARIANTS) + " |",
              "|---|" + "---|" * len(VARIANTS)]
    for name, block in results.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{block['variants'][v]['train_seconds']:.1f}" for v in VARIANTS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(data_sets.DATASETS))
    parser.add_argument("--data-dir", type=Path, default=data_sets.DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild refit.md from refit.json without training")
    args = parser.parse_args(argv)
    if args.report_only:
        results = json.loads((args.out / "refit.json").read_text())
    else:
        results = {name: measure(name, args.data_dir) for name in args.datasets.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "refit.json", json.dumps(results, indent=1).encode())
    header = ("# Every event used: the refit on all train contexts\n\nCommand: `python -m "
              f"benchmarks.refit --datasets {args.datasets}`. Test HR@20, full ranking. "
              "Seconds are noisy (the run shared the box with the test suite for part of "
              "its time); HR@20 is deterministic.\n\n")
    main_results = args.out / "results.json"
    main = json.loads(main_results.read_text())["datasets"] if main_results.is_file() else {}
    atomic_write_bytes(args.out / "refit.md", (header + markdown(results, main)).encode())


if __name__ == "__main__":
    main()
