"""``itemvec report``: one self-contained HTML page about a bundle and its evaluation.

Sections: what was trained, held-out metrics against the baselines (from ``evaluation.json``,
written by ``itemvec evaluate --out DIR``), popularity strata, whether item categories are
recoverable from the vectors (neighbour agreement, a linear probe, k-means purity), the item map,
the training curves and example neighbours. Pictures are inline base64 PNGs; nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import train_test_split

from itemvec.analysis.plots import (
    curves_figure,
    default_color_column,
    item_column,
    map_figure,
    map_payload,
    new_figure,
    png_bytes,
    project,
)
from itemvec.evaluation.protocol import STRATA, popularity_strata
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.query.labels import label_column
from itemvec.util.errors import ItemvecError
from itemvec.util.topk import top_k

logger = logging.getLogger(__name__)
EVALUATION_NAME = "evaluation.json"
PROBE_MAX_ITEMS = 20_000
NEIGHBOURS = 10


# -- measurements (plain functions, tested on planted structure) ---------------------------------
def neighbour_table(embeddings: ItemEmbeddings, rows: np.ndarray,
                    n: int = NEIGHBOURS) -> np.ndarray:
    """Top-``n`` cosine neighbours (indices) of each item in ``rows``, chunked for memory."""
    out = np.zeros((len(rows), n), dtype=np.int64)
    for start in range(0, len(rows), 1024):
        chunk = rows[start:start + 1024]
        scores = embeddings.vectors[chunk] @ embeddings.vectors.T
        scores[np.arange(len(chunk)), chunk] = -np.inf
        for k, row in enumerate(scores):
            found = top_k(row, n)
            out[start + k, :len(found)] = found
    return out


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def neighbour_exposure(strata: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Share of all neighbour slots that go to each popularity stratum."""
    counts = np.bincount(strata[neighbours.ravel()], minlength=len(STRATA))
    return counts / max(counts.sum(), 1)


def category_scores(vectors: np.ndarray, labels: np.ndarray, neighbours: np.ndarray,
                    rows: np.ndarray, seed: int = 0) -> dict:
    """How well the vectors recover a category column.

    - ``neighbour_agreement``: share of top-10 neighbours with the item's category, beside the
      share expected by chance (``chance_agreement``);
    - ``probe_accuracy``: logistic regression on held-out items, beside always guessing the
      most common category (``majority_accuracy``);
    - ``purity`` / ``nmi``: k-means with as many clusters as categories.
    """
    labels = np.asarray(["(none)" if v is None else str(v) for v in labels], dtype=object)
    names, codes = np.unique(labels, return_inverse=True)
    sizes = np.bincount(codes)
    n = len(labels)
    agreement = float((codes[neighbours] == codes[rows][:, None]).mean())
    chance = float(((sizes * (sizes - 1)).sum()) / max(n * (n - 1), 1))
    x, y = vectors[rows], codes[rows]
    present = np.bincount(y)
    stratify = y if present[present > 0].min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=seed,
                                                        stratify=stratify)
    probe = LogisticRegression(max_iter=300).fit(x_train, y_train)
    probe_accuracy = float((probe.predict(x_test) == y_test).mean())
    majority = float((y_test == np.bincount(y_train).argmax()).mean())
    clusters = min(len(names), 200, len(rows))
    found = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit_predict(x)
    table = np.zeros((clusters, len(names)), dtype=np.int64)
    np.add.at(table, (found, y), 1)
    return {
        "categories": int(len(names)), "items": int(len(rows)),
        "neighbour_agreement": agreement, "chance_agreement": chance,
        "probe_accuracy": probe_accuracy, "majority_accuracy": majority,
        "purity": float(table.max(axis=1).sum() / len(rows)),
        "nmi": float(normalized_mutual_info_score(y, found)),
    }


# -- evaluation file -----------------------------------------------------------------------------
def read_evaluation(bundle: Path, path: Path | None = None) -> dict | None:
    """``--evaluation FILE`` or ``BUNDLE/evaluation.json``; None when neither exists."""
    path = Path(path) if path is not None else Path(bundle) / EVALUATION_NAME
    if not path.is_file():
        if path.name != EVALUATION_NAME or path.parent != Path(bundle):
            raise ItemvecError(f"--evaluation {path}: no such file")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ItemvecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise ItemvecError(f"{path}: expected the JSON of itemvec evaluate (a 'results' object)")
    return data


# -- HTML ----------------------------------------------------------------------------------------
def _img(png: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">')


def _kind_line(stats: dict) -> str | None:
    """Sessions or baskets, with who decided and why (older bundles: the kind alone)."""
    decision = stats.get("context_kind_decision")
    if not decision:
        return stats.get("context_kind")
    how = "set in the config" if decision.get("chosen_by") == "config" else "from the data"
    return f"{decision.get('kind')} ({how}: {decision.get('reason')})"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _metric_keys(methods: dict) -> list[str]:
    first = next(iter(methods.values()), {})
    return [k for k in first if "@" in k]


def metrics_section(evaluation: dict | None) -> str:
    if evaluation is None:
        return ("<h2>Held-out metrics</h2><p class=note>No evaluation found. Run "
                "<code>itemvec evaluate EVENTS ... --out DIR</code> to store one in the bundle "
                "(DIR/evaluation.json), or pass <code>--evaluation FILE.json</code>.</p>")
    parts = ["<h2>Held-out metrics</h2>"]
    split = evaluation.get("split", {})
    if split:
        parts.append(f"<p>Contexts split {'by time' if split.get('by_time') else 'at random'}: "
                     f"{split.get('train')} train, {split.get('valid')} validation, "
                     f"{split.get('test')} test. Every test query ranks all items.</p>")
    peers = evaluation.get("peers") or {}
    for task, methods in evaluation["results"].items():
        methods = {**methods, **{f"{name} (peer)": m for name, m in peers.get(task, {}).items()}}
        keys = _metric_keys(methods)
        best = {k: max(float(m.get(k, 0.0)) for m in methods.values()) for k in keys}
        rows = []
        for name, m in methods.items():
            cells = [html.escape(name)]
            for k in keys:
                value = float(m.get(k, float("nan")))
                text = f"{value:.4f}"
                cells.append(f"<b>{text}</b>" if value == best[k] else text)
            cells += [str(m.get("queries", "")), f"{float(m.get('train_seconds', 0)):.1f}"]
            rows.append(cells)
        parts.append(f"<h3>{html.escape(task)}</h3>")
        parts.append(_table(["method", *keys, "queries", "train s"], rows, "metrics"))
    parts.append(_img(png_bytes(comparison_figure(evaluation)), "methods compared"))
    return "".join(parts)


def comparison_figure(evaluation: dict):
    """Grouped bars: every method's metrics per task (the peer comparison)."""
    tasks = list(evaluation["results"])
    fig = new_figure(4.2 * len(tasks) + 1, 3.4)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    peers = evaluation.get("peers") or {}
    for ax, task in zip(axes, tasks, strict=True):
        methods = {**evaluation["results"][task], **peers.get(task, {})}
        keys = _metric_keys(methods)
        width = 0.8 / max(len(methods), 1)
        for j, (name, m) in enumerate(methods.items()):
            ax.bar(np.arange(len(keys)) + j * width, [float(m.get(k, 0)) for k in keys], width,
                   label=name)
        ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
        ax.set_title(task)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def popularity_section(embeddings: ItemEmbeddings, evaluation: dict | None,
                       neighbours: np.ndarray, rows: np.ndarray) -> str:
    """Metrics by target popularity when the evaluation has them; neighbour exposure always."""
    table = embeddings.item_table
    if table is None or "count" not in table.columns:
        return ""
    strata = popularity_strata(np.asarray(table["count"].to_list(), dtype=np.float64))
    names = [label for _, _, label in STRATA]
    catalogue = np.bincount(strata, minlength=len(STRATA)) / len(strata)
    exposure = neighbour_exposure(strata, neighbours)
    fig = new_figure(10, 3.6)
    axes = fig.subplots(1, 2)
    x = np.arange(len(STRATA))
    axes[0].bar(x - 0.2, catalogue, 0.4, label="share of catalogue", color="#bbbbbb")
    axes[0].bar(x + 0.2, exposure, 0.4, label=f"share of top-{NEIGHBOURS} neighbour slots")
    axes[0].set_xticks(x, names)
    axes[0].set_xlabel("item popularity stratum")
    axes[0].set_title("who appears as a neighbour")
    axes[0].legend(fontsize=8)
    by_pop = (evaluation or {}).get("by_popularity")
    if by_pop:
        task = "s2i" if "s2i" in by_pop else next(iter(by_pop))
        for name, values in by_pop[task].items():
            axes[1].plot(x, [values.get(label, np.nan) for label in names], marker="o",
                         label=name)
        axes[1].set_xticks(x, names)
        axes[1].set_xlabel("popularity stratum of the held-out target")
        axes[1].set_ylabel(f"HR@{(evaluation or {}).get('k', 20)}")
        axes[1].set_title(f"{task}: hit rate by target popularity")
        axes[1].legend(fontsize=8)
    else:
        own = np.bincount(strata[rows], minlength=len(STRATA))
        same = [float((strata[neighbours[strata[rows] == s]] == s).mean()) if own[s] else np.nan
                for s in range(len(STRATA))]
        axes[1].bar(x, same, 0.6, color="#2ca02c")
        axes[1].set_xticks(x, names)
        axes[1].set_xlabel("popularity stratum of the query item")
        axes[1].set_title("neighbours from the same stratum")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    coverage = len(np.unique(neighbours)) / len(embeddings)
    note = ("" if by_pop else " The evaluation has no per-popularity metrics, so the right panel "
            "shows how often a query item's neighbours come from its own stratum.")
    return (f"<h2>Popularity strata</h2><p>Items are ranked by how many contexts they occur in; "
            f"strata are shares of that ranking. {coverage:.1%} of the catalogue appears in some "
            f"item's top-{NEIGHBOURS} neighbours.{note}</p>" + _img(png_bytes(fig), "popularity"))


def category_section(embeddings: ItemEmbeddings, column: str | None, neighbours: np.ndarray,
                     rows: np.ndarray, seed: int) -> tuple[str, dict | None]:
    if column is None:
        return ("<h2>Categories</h2><p class=note>No category column: pass --category COL with "
                "an item table in the bundle (train with --items FILE).</p>", None)
    labels = item_column(embeddings, column)
    distinct = len(set(map(str, labels)))
    if distinct < 2 or distinct > len(labels) // 2:
        return (f"<h2>Categories</h2><p class=note>Column {html.escape(column)} has {distinct} "
                "distinct values; a category probe needs between 2 and half the items.</p>", None)
    scores = category_scores(embeddings.vectors, labels, neighbours, rows, seed)
    rows_html = [
        [f"top-{NEIGHBOURS} neighbours in the same {html.escape(column)}",
         f"{scores['neighbour_agreement']:.3f}", f"{scores['chance_agreement']:.3f} (chance)"],
        ["linear probe accuracy (30% held-out items)", f"{scores['probe_accuracy']:.3f}",
         f"{scores['majority_accuracy']:.3f} (majority class)"],
        [f"k-means purity ({scores['categories']} clusters)", f"{scores['purity']:.3f}",
         f"NMI {scores['nmi']:.3f}"],
    ]
    text = (f"<h2>Categories</h2><p>Do the vectors, learned without labels, recover "
            f"<code>{html.escape(column)}</code> ({scores['categories']} values, "
            f"{scores['items']} items scored)?</p>")
    return text + _table(["measure", "itemvec", "reference"], rows_html), scores


def examples_section(embeddings: ItemEmbeddings, column: str | None, n_examples: int = 6) -> str:
    table = embeddings.item_table
    counts = (np.asarray(table["count"].to_list(), dtype=np.float64)
              if table is not None and "count" in table.columns else np.zeros(len(embeddings)))
    order = np.argsort(-counts, kind="stable")
    picks = order[np.unique(np.linspace(0, len(order) * 0.5, n_examples).astype(int)
                            .clip(0, len(order) - 1))]
    labels = item_column(embeddings, column) if column else None
    title_col = label_column(embeddings)
    titles = item_column(embeddings, title_col) if title_col else None

    def name(i: int) -> str:
        text = html.escape(str(embeddings.item_ids[i]))
        if titles is not None and titles[i] is not None:
            text += f" <span class=dim>{html.escape(str(titles[i]))}</span>"
        if labels is not None:
            text += f" <span class=tag>{html.escape(str(labels[i]))}</span>"
        return text

    parts = ["<h2>Example neighbours</h2><p>Most similar items (cosine) for items from the head "
             "to the middle of the popularity ranking.</p>"]
    for i in picks:
        ids, scores = embeddings.similar_items(str(embeddings.item_ids[i]), n=5)
        rows = []
        for item, score in zip(ids, scores, strict=True):
            j = embeddings.index[str(item)]
            same = (labels is not None and labels[j] == labels[i])
            rows.append([name(j), f"{float(score):.3f}", "yes" if same else ""])
        parts.append(f"<h3>{name(int(i))}</h3>")
        parts.append(_table(["neighbour", "cosine", "same " + (column or "category")], rows))
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5rem auto; padding: 0 1rem;
  color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.7rem; text-align: left; }
th { background: #f5f5f5; }
img { max-width: 100%; }
.note { color: #666; }
.dim { color: #777; }
.tag { background: #eef; border-radius: 3px; padding: 0 0.3rem; font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def build_report(bundle: str | Path, evaluation: dict | None = None, category: str | None = None,
                 method: str = "auto", seed: int = 0, title: str | None = None) -> str:
    """The report page for ``bundle`` (and its evaluation), as an HTML string."""
    bundle = Path(bundle)
    embeddings = load_embeddings(bundle)
    manifest = embeddings.metadata
    stats = manifest.get("stats", {})
    column = category if category is not None else _category_default(embeddings)
    if category is not None:
        item_column(embeddings, category)  # validates the name, listing the known columns
    rows = sample_rows(len(embeddings), PROBE_MAX_ITEMS, seed)
    neighbours = neighbour_table(embeddings, rows, min(NEIGHBOURS, len(embeddings) - 1))
    coords, used = project(embeddings.vectors, method, seed)
    payload = map_payload(embeddings, coords, column, used)
    category_html, _ = category_section(embeddings, column, neighbours, rows, seed)
    title = title or f"itemvec report: {bundle.name}"
    summary = _table(["", ""], [[k, html.escape(str(v))] for k, v in (
        ("bundle", bundle), ("created", manifest.get("created")),
        ("itemvec", manifest.get("itemvec_version")), ("items", len(embeddings)),
        ("dimension", embeddings.dim), ("trained on", stats.get("source")),
        ("events / contexts", f"{stats.get('events')} / {stats.get('contexts')}"),
        ("context kind", _kind_line(stats)),
        ("objective", manifest.get("config", {}).get("training", {}).get("objective")),
        ("best epoch / epochs run", f"{stats.get('best_epoch')} / {stats.get('epochs_run')}"),
        ("training seconds", stats.get("train_seconds")))])
    sections = [f"<h1>{html.escape(title)}</h1>", summary, metrics_section(evaluation),
                popularity_section(embeddings, evaluation, neighbours, rows), category_html,
                f"<h2>Item map</h2><p>{used} projection of the item vectors"
                f"{', coloured by ' + html.escape(column) if column else ''}.</p>"
                + _img(png_bytes(map_figure(payload, f"{len(embeddings)} items")), "item map")]
    if stats.get("history"):
        sections.append("<h2>Training</h2>" + _img(png_bytes(curves_figure(
            stats["history"], stats.get("best_epoch"))), "training curves"))
    sections.append(examples_section(embeddings, column))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


def _category_default(embeddings: ItemEmbeddings) -> str | None:
    column = default_color_column(embeddings)
    return None if column == "count" else column
