"""Is a cell's gap the split or the method? itemvec / best tuned peer over several split seeds.

The data sets without a clock (groceries, instacart-sample, amazon-beauty) are split by a seeded
random order, so each seed is a different train/valid/test partition with every method retuned
on it. Run ``benchmarks.run --seed S --out DIR`` per seed, then:

    python -m benchmarks.seeds benchmarks/results benchmarks/results/seeds/seed*

which writes ``benchmarks/results/seeds.md``: per (data set, task) the ratio of itemvec's test
HR@20 to the best peer's in each run, and their geometric mean.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.report import geometric_mean_ratio
from itemvec.util.files import atomic_write_bytes


def collect(dirs: list[Path]) -> dict[tuple[str, str], list[tuple[int, float, str]]]:
    """(data set, task) -> [(seed, ratio, best peer)] over the result directories."""
    cells: dict[tuple[str, str], list[tuple[int, float, str]]] = {}
    for directory in dirs:
        results = json.loads((directory / "results.json").read_text())
        _, rows = geometric_mean_ratio(results)
        for name, task, ratio, peer in rows:
            seed = results["datasets"][name]["stats"].get("seed", 0)
            cells.setdefault((name, task), []).append((seed, ratio, peer))
    return cells


def markdown(cells: dict[tuple[str, str], list[tuple[int, float, str]]]) -> str:
    lines = ["| data set | task | seeds | itemvec / best peer per seed | geometric mean | "
             "seeds itemvec >= best peer |", "|---|---|---|---|---|---|"]
    for (name, task), runs in cells.items():
        if len(runs) < 2:
            continue
        runs = sorted(runs)
        ratios = [r for _, r, _ in runs]
        mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        each = ", ".join(f"{r:.3f} ({p})" for _, r, p in runs)
        wins = sum(r >= 1.0 for r in ratios)
        lines.append(f"| {name} | {task} | {len(runs)} | {each} | {mean:.3f} | "
                     f"{wins}/{len(runs)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="benchmarks.run --out directories")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seeds.md"))
    args = parser.parse_args(argv)
    table = markdown(collect(args.dirs))
    header = ("# itemvec / best tuned peer across split seeds\n\nCommand: `python -m "
              "benchmarks.seeds " + " ".join(str(d) for d in args.dirs) + "`\n\n")
    atomic_write_bytes(args.out, (header + table).encode())
    print(table)


if __name__ == "__main__":
    main()
