"""Run the benchmark: ``python -m benchmarks.run [--datasets ...] [--methods ...] [--quick]``.

Results of every (data set, method) go into ``<out>/results.json``; a run updates only the
entries it computes, so ``--methods itemvec`` re-trains and re-scores just itemvec and merges it
with the cached, tuned peers. Tables, the plot and the README summary are then regenerated from
the whole JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import datasets as data_sets  # noqa: E402
from benchmarks.methods import ALL  # noqa: E402
from benchmarks.methods import get as get_method  # noqa: E402
from benchmarks.protocol import prepare  # noqa: E402
from benchmarks.report import write_reports  # noqa: E402
from benchmarks.runner import dataset_stats, run_method  # noqa: E402
from itemvec.config import PipelineConfig  # noqa: E402
from itemvec.util.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks")


def _names(text: str, known: tuple[str, ...], kind: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {kind} {unknown[0]!r}; known: {', '.join(known)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(data_sets.DATASETS),
                        help="comma-separated data sets (default: all)")
    parser.add_argument("--methods", default=",".join(ALL),
                        help="comma-separated methods (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny grids: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="results folder (results.json, tables, plot)")
    parser.add_argument("--data-dir", type=Path, default=data_sets.DEFAULT_DATA_DIR,
                        help="folder holding the data sets (default: ../shared/data)")
    parser.add_argument("--seed", type=int, default=0, help="split and query seed")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not update the summary block of benchmarks/README.md")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild tables, plot and README summary from results.json")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"meta": {}, "datasets": {}}


def save_results(path: Path, results: dict, computed: list[tuple[str, str]]) -> dict:
    """Merge the (data set, method) entries this run computed into what is on disk, under a
    lock: runs on other data sets or methods may share one ``--out`` at the same time."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = load_results(path)
        if results["meta"]:
            merged["meta"] = results["meta"]
        for name, method in computed:
            ours = results["datasets"][name]
            block = merged["datasets"].setdefault(name, {"stats": ours["stats"], "methods": {}})
            if block["stats"].get("vocabulary_checksum") != ours["stats"]["vocabulary_checksum"] \
                    or block["stats"].get("test_queries") != ours["stats"]["test_queries"]:
                block["methods"] = {}  # the protocol changed: older entries are not comparable
            block["stats"] = ours["stats"]
            block["methods"][method] = ours["methods"][method]
        atomic_write_bytes(path, json.dumps(merged, indent=1, default=str).encode())
    return merged


def code_version() -> str:
    """The commit the numbers were measured with (+dirty when src/ or benchmarks/ differ)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "benchmarks/*.py"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_line(args: argparse.Namespace, dataset: str) -> str:
    parts = ["python -m benchmarks.run", f"--datasets {dataset}"]
    if args.quick:
        parts.append("--quick")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    datasets = _names(args.datasets, data_sets.DATASETS, "data set")
    methods = _names(args.methods, ALL, "method")
    path = args.out / "results.json"
    args.out.mkdir(parents=True, exist_ok=True)
    results = load_results(path)
    computed: list[tuple[str, str]] = []
    if results["meta"].get("quick", args.quick) != args.quick and results["datasets"] \
            and not args.report_only:
        raise SystemExit(f"{path} holds {'quick' if results['meta']['quick'] else 'full'} "
                         "results; use another --out to mix modes")
    for name in [] if args.report_only else datasets:
        began = time.perf_counter()
        dataset = data_sets.load(name, args.data_dir)
        config = PipelineConfig(ingest=dataset.ingest)  # itemvec defaults, only columns set
        data = prepare(name, dataset.log, config, seed=args.seed)
        stats = dict(dataset_stats(data), note=dataset.note, seed=args.seed)
        block = results["datasets"].setdefault(name, {"stats": stats, "methods": {}})
        if block["stats"].get("vocabulary_checksum") != stats["vocabulary_checksum"] or \
                block["stats"].get("test_queries") != stats["test_queries"]:
            logger.warning("%s: split or vocabulary changed; dropping cached methods", name)
            block["methods"] = {}
        block["stats"] = stats
        print(f"{name}: {stats['items']} items, test queries {stats['test_queries']}", flush=True)
        for method in methods:
            if not get_method(method).applies(data):
                continue
            entry = run_method(data, method, dataset.categories, quick=args.quick,
                               progress=lambda text: print(text, flush=True))
            entry["updated"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            entry["code"] = code_version()
            block["methods"][method] = entry
            tasks = entry["tasks"]
            print(f"  -> {name} {method}: " + ", ".join(
                f"{t} HR@20 {v['HR@20']:.4f}" for t, v in tasks.items())
                + f" (tuning {entry['tuning_seconds']:.0f}s)", flush=True)
            results["meta"] = {
                "quick": args.quick,
                "updated": dt.date.today().isoformat(),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                           f"Python {platform.python_version()}",
            }
            computed.append((name, method))
            save_results(path, results, computed)
        print(f"{name}: done in {time.perf_counter() - began:.0f}s", flush=True)
    results = save_results(path, results, computed) if computed else load_results(path)
    commands = {n: command_line(args, n) for n in results["datasets"]}
    readme = None if args.no_readme else ROOT / "benchmarks" / "README.md"
    write_reports(results, args.out, commands, readme)
    return results


if __name__ == "__main__":
    main()
