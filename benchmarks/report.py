"""Markdown tables, the HR@20 plot and the README summary, all from results.json."""

from __future__ import annotations

import math
import re
from pathlib import Path

from benchmarks.methods import ALL, PEERS, SEQUENTIAL
from benchmarks.protocol import K
from benchmarks.significance import DRAWS, intervals, paired_cell
from itemvec.evaluation.protocol import TASKS
from itemvec.util.files import atomic_write_bytes

HR, NDCG, MRR = f"HR@{K}", f"NDCG@{K}", f"MRR@{K}"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def _ordered(methods: dict) -> list[str]:
    return [m for m in ALL if m in methods] + sorted(set(methods) - set(ALL))


def _fmt_params(entry: dict) -> str:
    merged = {**entry.get("params", {}), **entry.get("query", {})}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in merged.items()) or "defaults"


def dataset_markdown(name: str, block: dict, command: str) -> str:
    stats, methods = block["stats"], block["methods"]
    lines = [f"# {name}", "", f"Reproduce: `{command}`", "",
             f"{stats['context_kind']} contexts; split train/valid/test = "
             f"{stats['split']['train']}/{stats['split']['valid']}/{stats['split']['test']} "
             f"({'by time of last event' if stats['split']['by_time'] else 'seeded random'}); "
             f"{stats['items']} training items ranked in full; "
             f"{stats['train_events']} training events.", ""]
    for task in TASKS:
        lines += [f"## {task} (test: {stats['test_queries'][task]} queries)", "",
                  f"| method | {HR} | {NDCG} | {MRR} | valid {HR} | train s | peak MiB | "
                  "selected on valid |", "|---|---|---|---|---|---|---|---|"]
        for m in _ordered(methods):
            t = methods[m]["tasks"][task]
            lines.append(f"| {m} | {t[HR]:.4f} | {t[NDCG]:.4f} | {t[MRR]:.4f} | "
                         f"{t['valid_hr']:.4f} | {t['train_seconds']:.1f} | {t['peak_mib']:.0f} | "
                         f"{_fmt_params(t)} |")
        lines.append("")
    lines += [f"## {HR} by target popularity (test)", "",
              "Targets split by their training popularity: head / torso / tail items each hold a "
              f"third of the training interactions ({stats['strata_items']['head']} / "
              f"{stats['strata_items']['torso']} / {stats['strata_items']['tail']} items).", "",
              "| method | task | head | torso | tail |", "|---|---|---|---|---|"]
    for m in _ordered(methods):
        for task in TASKS:
            s = methods[m]["tasks"][task]["by_popularity"]
            lines.append(f"| {m} | {task} | {s['head']:.4f} ({s['head_queries']}) | "
                         f"{s['torso']:.4f} ({s['torso_queries']}) | "
                         f"{s['tail']:.4f} ({s['tail_queries']}) |")
    lines.append("")
    probed = [m for m in _ordered(methods) if methods[m].get("probe")]
    if probed:
        lines += ["## Category probe (embeddings of the s2i-selected model)", "",
                  "| method | labels | items | classes | majority acc | probe acc | macro-F1 | "
                  "k-means NMI | k-means AMI |", "|---|---|---|---|---|---|---|---|---|"]
        for m in probed:
            for label_set, p in methods[m]["probe"].items():
                if "accuracy" not in p:
                    continue
                lines.append(f"| {m} | {label_set} | {p['items']} | {p['classes']} | "
                             f"{p['majority_accuracy']:.3f} | {p['accuracy']:.3f} | "
                             f"{p['macro_f1']:.3f} | {p['nmi']:.3f} | "
                             f"{p.get('ami', float('nan')):.3f} |")
        lines.append("")
    lines += ["## Tuning", "",
              "| method | fits | configs scored on valid | tuning s |", "|---|---|---|---|"]
    for m in _ordered(methods):
        e = methods[m]
        lines.append(f"| {m} | {e['fits']} | {e['configs']} | {e['tuning_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def geometric_mean_ratio(results: dict) -> tuple[float | None, list[tuple[str, str, float, str]]]:
    """itemvec HR@20 / best tuned peer HR@20 per (data set, task), and their geometric mean."""
    rows = []
    for name, block in results["datasets"].items():
        methods = block["methods"]
        if "itemvec" not in methods:
            continue
        for task in TASKS:
            peers = {m: methods[m]["tasks"][task][HR] for m in PEERS if m in methods}
            if not peers:
                continue
            best = max(peers, key=peers.get)
            ours = methods["itemvec"]["tasks"][task][HR]
            if peers[best] > 0 and ours > 0:
                rows.append((name, task, ours / peers[best], best))
    if not rows:
        return None, rows
    return math.exp(sum(math.log(r[2]) for r in rows) / len(rows)), rows


def ratio_markdown(results: dict) -> list[str]:
    """The geometric-mean ratio and, where per-query hits are stored, paired 95% intervals."""
    ratio, rows = geometric_mean_ratio(results)
    if ratio is None:
        return []
    cells = [paired_cell(results["datasets"][n], n, t, p) for n, t, _, p in rows]
    paired = all(c is not None for c in cells)
    per_cell, overall = intervals(cells) if paired else ([None] * len(rows), None)
    head = (f"itemvec / best tuned peer ({HR}), geometric mean over {len(rows)} "
            f"(data set, task) pairs: **{ratio:.3f}**")
    if overall is not None:
        head += f" (paired bootstrap 95% interval {overall[0]:.3f}-{overall[1]:.3f})"
    lines = [head, "", "| data set | task | ratio | 95% interval | queries only itemvec / "
             "only the peer hits | best peer |", "|---|---|---|---|---|---|"]
    for (n, t, r, p), cell, ci in zip(rows, cells, per_cell, strict=True):
        span = f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "–"
        split = "{} / {}".format(*cell.discordant) if cell else "–"
        lines.append(f"| {n} | {t} | {r:.3f} | {span} | {split} | {p} |")
    if paired:
        lines += ["", "Intervals: queries resampled with replacement, the same draw for both "
                  f"methods, {DRAWS} draws (`benchmarks/significance.py`); the best peer is the one "
                  "named, fixed across draws."]
    return lines


def sequential_markdown(results: dict) -> list[str]:
    """itemvec against the better of the two sequential peers, per session set and task."""
    rows = []
    for name, block in results["datasets"].items():
        methods = block["methods"]
        present = [m for m in SEQUENTIAL if m in methods]
        if "itemvec" not in methods or not present:
            continue
        for task in TASKS:
            best = max(present, key=lambda m: methods[m]["tasks"][task][HR])
            if methods[best]["tasks"][task][HR] > 0:
                rows.append(paired_cell(block, name, task, best))
    cells = [c for c in rows if c is not None]
    if not cells:
        return []
    per_cell, _ = intervals(cells)
    lines = ["", f"itemvec / best sequential peer ({HR}; {', '.join(SEQUENTIAL)}), paired "
             "bootstrap 95% intervals as above:", "",
             "| data set | task | itemvec | peer | ratio | 95% interval | only itemvec / only "
             "the peer hits |", "|---|---|---|---|---|---|---|"]
    for cell, (low, high) in zip(cells, per_cell, strict=True):
        lines.append(f"| {cell.name} | {cell.task} | {cell.ours.mean():.4f} | {cell.peer} "
                     f"{cell.theirs.mean():.4f} | {cell.ratio:.3f} | {low:.3f}-{high:.3f} | "
                     "{} / {} |".format(*cell.discordant))
    return lines


def time_markdown(results: dict) -> list[str]:
    """Default itemvec training time against the selected peers' fits, per data set."""
    lines = ["", "Training time of the selected model (s2i), wall seconds on this box (itemvec and "
             "item2vec in one run; sasrec and gru4rec in their own runs, see `updated` in "
             "results.json and the load noted in the README):", "",
             "| data set | itemvec | item2vec (tuned) | itemvec / item2vec | sasrec | gru4rec | "
             "itemvec stages |", "|---|---|---|---|---|---|---|"]
    for name, block in results["datasets"].items():
        ours, peer = block["methods"].get("itemvec"), block["methods"].get("item2vec")
        if ours is None or peer is None:
            continue
        a, b = ours["tasks"]["s2i"]["train_seconds"], peer["tasks"]["s2i"]["train_seconds"]
        sequential = [block["methods"][m]["tasks"]["s2i"]["train_seconds"]
                      if m in block["methods"] else None for m in SEQUENTIAL]
        seq_cells = " | ".join("–" if s is None else f"{s:.1f}" for s in sequential)
        stages = (ours.get("model_stats") or {}).get("seconds") or {}
        named = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if v >= 0.05)
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {a / b if b else float('nan'):.1f}x | "
                     f"{seq_cells} | {named} |")
    return lines if len(lines) > 5 else []


def summary_markdown(results: dict) -> str:
    lines = [f"Measured {results['meta'].get('updated', '')} on "
             f"{results['meta'].get('machine', 'this machine')}; full-ranking {HR} on the test "
             "split (itemvec: default settings; peers: tuned per task on the validation split).",
             ""]
    methods = [m for m in ALL if any(m in b["methods"] for b in results["datasets"].values())]
    lines += ["| data set | task | " + " | ".join(methods) + " |",
              "|---|---|" + "---|" * len(methods)]
    for name, block in results["datasets"].items():
        for task in TASKS:
            cells = []
            peers = [block["methods"][m]["tasks"][task][HR] for m in PEERS if m in block["methods"]]
            top = max(peers) if peers else None
            for m in methods:
                if m not in block["methods"]:
                    cells.append("–")
                    continue
                value = block["methods"][m]["tasks"][task][HR]
                cells.append(f"**{value:.4f}**" if m in PEERS and value == top else f"{value:.4f}")
            lines.append(f"| {name} | {task} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += ratio_markdown(results)
    lines += sequential_markdown(results)
    lines += time_markdown(results)
    if results["meta"].get("quick"):
        lines += ["", "(quick run: tiny grids, smoke test only)"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 1, 3.6), squeeze=False)
    colours = dict(zip(ALL, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, name in zip(axes[0], names, strict=True):
        methods = _ordered(results["datasets"][name]["methods"])
        width = 0.8 / max(len(methods), 1)
        for k, m in enumerate(methods):
            values = [results["datasets"][name]["methods"][m]["tasks"][t][HR] for t in TASKS]
            ax.bar([i + k * width for i in range(len(TASKS))], values, width, label=m,
                   color=colours.get(m))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(TASKS))], TASKS)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(HR if ax is axes[0][0] else "")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.0 / (3.2 * len(names) + 1), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(results: dict, out: Path, commands: dict[str, str],
                  readme: Path | None = None) -> None:
    from benchmarks.datasets import DATASETS

    order = {name: i for i, name in enumerate(DATASETS)}
    results = dict(results, datasets=dict(sorted(results["datasets"].items(),
                                                 key=lambda kv: order.get(kv[0], len(order)))))
    out.mkdir(parents=True, exist_ok=True)
    for name, block in results["datasets"].items():
        atomic_write_bytes(out / f"{name}.md",
                           dataset_markdown(name, block, commands.get(name, "")).encode())
    summary = summary_markdown(results)
    atomic_write_bytes(out / "summary.md", summary.encode())
    if results["datasets"]:
        plot(results, out / "hr20.png")
    if readme is not None and readme.is_file():
        text = readme.read_text()
        pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
        if pattern.search(text):
            block = f"{README_START}\n{summary}{README_END}"
            atomic_write_bytes(readme, pattern.sub(lambda _: block, text).encode())
