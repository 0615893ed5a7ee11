"""An offline HTML page of a tuning study: optimisation history, setting importances, trials.

Plain HTML with inline SVG: no scripts, no network, readable from a bundle directory. Input is
``TuneResult.to_dict()`` (``itemvec.train.tuning``).
"""

from __future__ import annotations

import html
from typing import Any

WIDTH, HEIGHT, PAD = 640, 260, 44
STATE_COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#aaaaaa", "FAIL": "#d62728"}


def tuning_page(summary: dict[str, Any]) -> str:
    """The whole page for one study."""
    best = summary["best_params"]
    title = f"itemvec tune: study {summary['study']}"
    facts = (f"<p>Objective: validation HR@20 ({html.escape(summary['metric'])}), higher is "
             f"better. Chosen: trial {summary['best_trial']} of {len(summary['trials'])} "
             f"({summary['finished']} finished), {summary['best_value']:.4f}; another trial "
             f"replaces the given configuration only when it beats it by more than "
             f"{summary.get('margin', 0.0):.4f} (one standard error). Within 1% of the best "
             f"score after {summary['trials_to_within_1pct']} trials.</p>")
    best_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_param(v))}</td></tr>"
                        for k, v in best.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{facts}"
            f"<h2>Best settings</h2><table>{best_rows}</table>"
            f"<h2>Optimisation history</h2>{history_svg(summary['trials'])}"
            f"<h2>Setting importances (fANOVA)</h2>{importance_svg(summary['importances'])}"
            f"<h2>Trials</h2>{trials_table(summary['trials'])}</body></html>\n")


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}svg{background:#fafafa}")


def history_svg(trials: list[dict]) -> str:
    """Each completed trial's score (pruned and failed ones at the bottom) and the best so far."""
    scored = [t for t in trials if t["value"] is not None]
    if not scored:
        return "<p>No trial completed.</p>"
    low, high = min(t["value"] for t in scored), max(t["value"] for t in scored)
    low, high = (low - 0.01, high + 0.01) if high - low < 1e-9 else (low, high)
    n = max(len(trials) - 1, 1)

    def x(number: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * number / n

    def y(value: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - low) / (high - low)

    marks, line, best = [], [], None
    for t in trials:
        value = t["value"] if t["state"] == "COMPLETE" else None
        colour = STATE_COLOURS.get(t["state"], "#555")
        cy = y(value) if value is not None else HEIGHT - PAD + 8
        marks.append(f"<circle cx='{x(t['number']):.1f}' cy='{cy:.1f}' r='4' fill='{colour}'>"
                     f"<title>trial {t['number']} {t['state'].lower()} "
                     f"{'' if value is None else f'{value:.4f}'}</title></circle>")
        if value is not None:
            best = value if best is None else max(best, value)
        if best is not None:
            line.append(f"{x(t['number']):.1f},{y(best):.1f}")
    axes = (f"<line x1='{PAD}' y1='{HEIGHT - PAD}' x2='{WIDTH - PAD}' y2='{HEIGHT - PAD}' "
            f"stroke='#333'/><line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{HEIGHT - PAD}' "
            f"stroke='#333'/><text x='{PAD}' y='{PAD - 8}' font-size='11'>{high:.4f}</text>"
            f"<text x='{PAD}' y='{HEIGHT - PAD + 24}' font-size='11'>{low:.4f} (grey: pruned, "
            f"red: failed; line: best so far)</text><text x='{WIDTH - PAD}' y='{HEIGHT - 6}' "
            f"font-size='11' text-anchor='end'>trial</text>")
    path = f"<polyline fill='none' stroke='#ff7f0e' points='{' '.join(line)}'/>"
    return f"<svg width='{WIDTH}' height='{HEIGHT}'>{axes}{path}{''.join(marks)}</svg>"


def importance_svg(importances: dict[str, float]) -> str:
    """Horizontal bars, most important first."""
    if not importances:
        return "<p>Too few completed trials to estimate importances.</p>"
    rows = sorted(importances.items(), key=lambda kv: -kv[1])
    height, top = 22 * len(rows) + 10, max(v for _, v in rows) or 1.0
    bars = "".join(
        f"<text x='150' y='{22 * i + 20}' font-size='12' text-anchor='end'>{html.escape(k)}"
        f"</text><rect x='156' y='{22 * i + 8}' height='16' width='{360 * v / top:.1f}' "
        f"fill='#1f77b4'/><text x='{162 + 360 * v / top:.1f}' y='{22 * i + 20}' "
        f"font-size='11'>{v:.3f}</text>" for i, (k, v) in enumerate(rows))
    return f"<svg width='{WIDTH}' height='{height}'>{bars}</svg>"


def trials_table(trials: list[dict]) -> str:
    names = sorted({k for t in trials for k in t["params"]})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        "trial", "state", "HR@20", "i2i", "s2i", "seconds", *names))
    rows = []
    for t in trials:
        cells = [t["number"], t["state"].lower(), t["value"], t["i2i"], t["s2i"], t["seconds"],
                 *(_param(t["params"][n]) if n in t["params"] else "" for n in names)]
        rows.append("<tr>" + "".join(f"<td>{html.escape(_text(c))}</td>" for c in cells)
                    + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _param(value: Any) -> str:
    """A setting's value as best_config.json writes it (None: null, i.e. the automatic choice)."""
    return "null" if value is None else _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["tuning_page"]
