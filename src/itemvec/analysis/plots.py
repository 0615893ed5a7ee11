"""Pictures of a bundle: a 2-D item map and the training curves, as PNG or interactive HTML.

The map projects the unit item vectors to 2-D (``method``):

- ``tsne`` (the default up to 5,000 items): PCA to 50 dims, then sklearn's t-SNE; keeps local
  neighbourhoods, which is what a person checks ("do phones sit next to phones?");
- ``pca`` (the default above that): instant and deterministic, but crowds clusters together;
- ``umap``: needs the optional ``umap-learn`` package (``pip install 'itemvec[umap]'``); its
  first fit compiles for about a minute.

Rendering uses matplotlib's ``Figure`` with the Agg canvas (no pyplot, no display). The HTML map
is one self-contained file: the points as JSON plus the map script, no network access.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
from importlib import resources
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.labels import label_column
from itemvec.util.errors import ItemvecError
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger(__name__)

METHODS = ("auto", "tsne", "pca", "umap")
TSNE_MAX_ITEMS = 5000
OTHER_COLOR = "#b0b0b0"
MAX_GROUPS = 20  # tab20 has 20 distinguishable colours; the rest become "other"
BOOLEAN_COLORS = ("#4c72b0", "#dd8452")  # false / 0: blue, true / 1: orange
LANDMARKS = 8  # the most popular items are named on PNG maps
LANDMARK_CHARS = 28


# -- projection ----------------------------------------------------------------------------------
def project(vectors: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors`` and the method actually used."""
    if method not in METHODS:
        raise ItemvecError(f"--method {method!r}: unknown; use one of {', '.join(METHODS)}")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if method == "auto":
        method = "tsne" if n <= TSNE_MAX_ITEMS else "pca"
    if n < 4 or vectors.shape[1] < 2:
        coords = np.zeros((n, 2), np.float32)
        coords[:, : min(2, vectors.shape[1])] = vectors[:, :2]
        return coords, "identity"
    if method == "pca":
        return _pca(vectors, 2, seed), "pca"
    if method == "umap":
        return _umap(vectors, seed), "umap"

    return _tsne(_pca(vectors, min(50, vectors.shape[1], n - 1), seed), seed), "tsne"


# scikit-learn is imported where it projects: the explorer imports this module in every serving
# worker, which would otherwise hold scikit-learn and pandas (~74 MiB) for a map it draws rarely.
def _tsne(reduced: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = len(reduced)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    # t-SNE's OpenMP threads spin; on a busy small machine they run 20x slower than one thread
    with threadpool_limits(limits=max(1, (os.cpu_count() or 2) // 2), user_api="openmp"):
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                      learning_rate="auto").fit_transform(reduced)
    return coords.astype(np.float32)


def _pca(vectors: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=dims, random_state=seed).fit_transform(vectors).astype(np.float32)


def _umap(vectors: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise ItemvecError("--method umap needs the 'umap-learn' package; install it with "
                           "pip install 'itemvec[umap]', or use --method tsne or pca") from None
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed)
    return reducer.fit_transform(vectors).astype(np.float32)


# -- item table columns --------------------------------------------------------------------------
def item_column(embeddings: ItemEmbeddings, column: str | None) -> np.ndarray | None:
    """Values of an item-table column in vocabulary order (None when absent or not asked for)."""
    table = embeddings.item_table
    if column is None:
        return None
    if table is None or column not in table.columns:
        known = ", ".join(c for c in (table.columns if table is not None else []) if c != "item_id")
        raise ItemvecError(f"--color-by {column!r}: the bundle's item table has no such column; "
                           f"known: {known or 'none (train with --items FILE)'}")
    return np.asarray(table[column].to_list(), dtype=object)


def default_color_column(embeddings: ItemEmbeddings) -> str | None:
    """``category`` when the item table has it, else popularity (``count``), else none."""
    table = embeddings.item_table
    if table is None:
        return None
    for name in ("category", "genre", "department", "aisle", "count"):
        if name in table.columns:
            return name
    return None


def _is_numeric(values: np.ndarray) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                 for v in present)


BOOLEAN_TEXT = {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}


def _as_boolean(value: object) -> bool | None:
    """True/False for a boolean-looking value (True, 1, 1.0, "yes", "true"), else None."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return BOOLEAN_TEXT.get(value.strip().lower())
    return None


def colouring_kind(values: np.ndarray | None) -> str | None:
    """How a column colours the map: ``boolean`` (only 0/1, true/false, yes/no: two distinct
    colours, not the two ends of a colour ramp), ``numeric`` (a colour bar) or ``categorical``
    (a palette and legend); None without a column."""
    if values is None:
        return None
    present = [v for v in values if v is not None]
    if present and all(_as_boolean(v) is not None for v in present):
        return "boolean"
    return "numeric" if _is_numeric(values) else "categorical"


def colour_scale(values: np.ndarray) -> dict:
    """The numeric colour scale: min, max and whether it is logarithmic (positive values over
    two orders of magnitude, such as power-law popularity counts, so the tail is visible)."""
    numbers = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    low, high = float(np.nanmin(numbers)), float(np.nanmax(numbers))
    log = bool(low > 0 and high / low >= 100)
    return {"min": low, "max": high, "log": log, "cmap": "viridis"}


def _norm(scale: dict):
    from matplotlib.colors import LogNorm, Normalize

    high = scale["max"] if scale["max"] > scale["min"] else scale["min"] + 1
    return (LogNorm if scale["log"] else Normalize)(vmin=scale["min"], vmax=high)


def colours(values: np.ndarray | None) -> tuple[list[str], list[dict]]:
    """A hex colour per item and a legend [{name, color}].

    Categories: the 19 most frequent get tab20 colours, the rest grey "other". Booleans: two
    distinct colours. Numbers: viridis over their range (logarithmic for counts spanning two
    orders of magnitude); the legend names the ends and the PNG map draws a colour bar.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    kind = colouring_kind(values)
    if values is None:
        return [], [{"name": "items", "color": "#1f77b4"}]
    if kind == "boolean":
        return _boolean_colours(values)
    if kind == "numeric":
        scale = colour_scale(values)
        cmap, norm = colormaps[scale["cmap"]], _norm(scale)
        numbers = np.asarray([np.nan if v is None else float(v) for v in values])
        shaded = np.ma.filled(np.ma.masked_invalid(norm(numbers)), np.nan)
        hexes = [OTHER_COLOR if np.isnan(s) else to_hex(cmap(float(np.clip(s, 0.0, 1.0))))
                 for s in shaded]
        return hexes, [{"name": f"low ({scale['min']:g})", "color": to_hex(cmap(0.0))},
                       {"name": f"high ({scale['max']:g})", "color": to_hex(cmap(1.0))}]
    labels = np.asarray(["(none)" if v is None else str(v) for v in values], dtype=object)
    names, counts = np.unique(labels, return_counts=True)
    order = names[np.argsort(-counts, kind="stable")]
    keep = list(order if len(order) <= MAX_GROUPS else order[: MAX_GROUPS - 1])
    palette = colormaps["tab20"]
    colour_of = {name: to_hex(palette(i % 20)) for i, name in enumerate(sorted(keep))}
    hexes = [colour_of.get(label, OTHER_COLOR) for label in labels]
    legend = [{"name": name, "color": colour_of[name]} for name in sorted(keep)]
    if len(order) > len(keep):
        legend.append({"name": f"other ({len(order) - len(keep)} more)", "color": OTHER_COLOR})
    return hexes, legend


def _boolean_colours(values: np.ndarray) -> tuple[list[str], list[dict]]:
    """Two distinct colours (and grey for missing), with a legend naming the values."""
    flags = [None if v is None else _as_boolean(v) for v in values]
    hexes = [OTHER_COLOR if f is None else BOOLEAN_COLORS[int(f)] for f in flags]
    shown = {}
    for value, flag in zip(values, flags, strict=True):
        if flag is not None:
            shown.setdefault(flag, str(value).lower() if isinstance(value, bool) else str(value))
    legend = [{"name": shown[flag], "color": BOOLEAN_COLORS[int(flag)]}
              for flag in (False, True) if flag in shown]
    if None in flags:
        legend.append({"name": "(none)", "color": OTHER_COLOR})
    return hexes, legend


def landmarks(embeddings: ItemEmbeddings, titles: np.ndarray | None,
              count: int = LANDMARKS) -> list[dict]:
    """The most popular few items (item-table ``count``, else the learned popularity bias) as
    ``{"index", "text"}``, named by their label (else id), to orient a reader of the map."""
    table = embeddings.item_table
    if table is not None and "count" in table.columns and table.height == len(embeddings):
        popularity = np.asarray(table["count"].fill_null(0).to_list(), dtype=np.float64)
    else:
        popularity = np.asarray(embeddings.item_bias, dtype=np.float64)
    if not len(popularity) or np.ptp(popularity) == 0:
        return []  # nothing says which items are well known
    rows = np.argsort(-popularity, kind="stable")[:count]
    marks = []
    for row in rows:
        text = titles[row] if titles is not None and titles[row] is not None else None
        text = str(embeddings.item_ids[row]) if text is None else str(text)
        if len(text) > LANDMARK_CHARS:
            text = text[: LANDMARK_CHARS - 1] + "…"
        marks.append({"index": int(row), "text": text})
    return marks


# -- map payload (shared by the HTML map and the explorer's /map.json) ---------------------------
def map_payload(embeddings: ItemEmbeddings, coords: np.ndarray, column: str | None,
                method: str, label: str | None = None) -> dict:
    """JSON-ready points: ids, x, y, colour, hover fields, legend, the colouring kind (with
    the numeric scale for a colour bar) and the landmarks named on PNG maps."""
    values = item_column(embeddings, column)
    hexes, legend = colours(values)
    kind = colouring_kind(values)
    label_col = label_column(embeddings, label)
    titles = item_column(embeddings, label_col) if label_col else None
    payload = {
        "ids": [str(i) for i in embeddings.item_ids],
        "x": np.round(coords[:, 0].astype(float), 4).tolist(),
        "y": np.round(coords[:, 1].astype(float), 4).tolist(),
        "color": hexes or None,
        "legend": legend,
        "column": column,
        "values": None if values is None else [None if v is None else str(v) for v in values],
        "title": None if titles is None else [None if t is None else str(t) for t in titles],
        "method": method,
        "kind": kind,
        "scale": colour_scale(values) if kind == "numeric" else None,
        "landmarks": landmarks(embeddings, titles),
    }
    return payload


def script_json(data: object) -> str:
    """JSON safe to embed in a <script> element (no '</script>' or '<!--' can appear)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def static_text(name: str) -> str:
    """A file shipped in itemvec/serve/static (read without importing the server package)."""
    return (resources.files("itemvec") / "serve" / "static" / name).read_text(encoding="utf-8")


def map_html(payload: dict, title: str) -> str:
    """A self-contained interactive map page: hover shows id, title and the coloured column."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{static_text("itemmap.css")}
body {{ font-family: system-ui, sans-serif; margin: 1rem; }}
#map {{ height: 80vh; }}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(payload["ids"])} items, {html.escape(payload["method"])} projection{
    ", coloured by " + html.escape(payload["column"]) if payload["column"] else ""}.
Hover a point for its id; scroll to zoom, drag to pan, double-click to reset.</p>
<div id="map"></div>
<script id="itemmap-data" type="application/json">{script_json(payload)}</script>
<script>{static_text("itemmap.js")}</script>
<script>new ItemMap(document.getElementById("map"),
  JSON.parse(document.getElementById("itemmap-data").textContent));</script>
</body></html>
"""


# -- matplotlib figures --------------------------------------------------------------------------
def new_figure(width: float, height: float):
    """A matplotlib Figure (no pyplot state, so threads may draw), or a clear install hint."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ItemvecError("plots need matplotlib; install it with pip install 'itemvec[plot]'"
                           ) from None
    return Figure(figsize=(width, height), dpi=110)


def map_figure(payload: dict, title: str):
    """Scatter of the item map: a colour bar for a numeric column, else a legend of the
    categories (or of the two boolean values); the landmarks are named beside their points."""
    fig = new_figure(9.5, 7)
    ax = fig.add_axes((0.04, 0.05, 0.66, 0.88))
    n = len(payload["x"])
    size = float(np.clip(20000 / max(n, 1), 1.0, 25.0))
    colour = payload["color"] or "#1f77b4"
    ax.scatter(payload["x"], payload["y"], s=size, c=colour, alpha=0.75, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    _name_landmarks(ax, payload)
    if payload.get("scale"):
        _colour_bar(fig, payload["scale"], payload["column"])
    elif payload["column"]:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=e["color"], label=e["name"])
                   for e in payload["legend"]]
        fig.legend(handles=handles, title=payload["column"], loc="center left",
                   bbox_to_anchor=(0.71, 0.5), fontsize=8, title_fontsize=9, frameon=False)
    return fig


def _colour_bar(fig, scale: dict, column: str) -> None:
    """A labelled colour bar on its own axes right of the map (log ticks for a log scale)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    cax = fig.add_axes((0.74, 0.15, 0.025, 0.7))
    bar = fig.colorbar(ScalarMappable(norm=_norm(scale), cmap=colormaps[scale["cmap"]]),
                       cax=cax)
    bar.set_label(column + (" (log scale)" if scale["log"] else ""), fontsize=9)


def _name_landmarks(ax, payload: dict) -> None:
    for mark in payload.get("landmarks") or []:
        i = mark["index"]
        ax.plot([payload["x"][i]], [payload["y"][i]], marker="o", markersize=5,
                markerfacecolor="none", markeredgecolor="#222222", linestyle="")
        ax.annotate(mark["text"], (payload["x"][i], payload["y"][i]), xytext=(4, 3),
                    textcoords="offset points", fontsize=7, color="#222222",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7,
                          "linewidth": 0})


def curves_figure(history: list[dict], best_epoch: int | None = None):
    """Training loss per epoch and, when validated, held-out HR@20 with the best epoch marked.

    The axes are honest rather than fitted to the data: both start at 0 (a loss or hit rate
    that falls from 2.31 to 2.29 looks flat, as it is, instead of a cliff drawn by matplotlib's
    autoscale) and reach a little above the largest value; the validation panel includes
    epoch 0, the model before training, so the gain training made is visible. A negative loss
    (possible for some objectives) falls back to a range padded by 5% on both sides.
    """
    if not history:
        raise ItemvecError("the bundle has no training history (stats.history is empty)")
    validated = [r for r in history if r.get("validation") is not None]
    fig = new_figure(10 if validated else 5.5, 3.8)
    axes = fig.subplots(1, 2 if validated else 1, squeeze=False)[0]
    trained = [r for r in history if "loss" in r]  # epoch 0, the start, has no loss
    losses = [r["loss"] for r in trained]
    axes[0].plot([r["epoch"] for r in trained], losses, marker="o", markersize=3)
    axes[0].set_ylim(*honest_limits(losses))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss")
    axes[0].set_title("loss")
    if validated:
        ax = axes[1]
        scores = [r["validation"] for r in validated]
        ax.plot([r["epoch"] for r in validated], scores, marker="o", markersize=4,
                color="#2ca02c")
        ax.set_ylim(*honest_limits(scores))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation HR@20")
        ax.set_title("held-out HR@20 (early stopping)")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="#888888", linestyle="--", linewidth=1)
            ax.annotate(f"best: epoch {best_epoch}", (best_epoch, ax.get_ylim()[0]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(left=min(r["epoch"] for r in history) - 0.3)
    fig.tight_layout()
    return fig


def honest_limits(values: list[float]) -> tuple[float, float]:
    """y limits from 0 to 8% above the largest value (padded 5% both ways if any is < 0)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if low < 0:
        pad = 0.05 * max(high - low, abs(high), 1e-9)
        return low - pad, high + pad
    return 0.0, high * 1.08 if high > 0 else 1.0


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_output(path: Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # a temp file is private; a picture or page is not
    return path


# -- the plot command's work ---------------------------------------------------------------------
def plot_map(embeddings: ItemEmbeddings, out: Path, column: str | None = None,
             method: str = "auto", seed: int = 0, title: str | None = None,
             label: str | None = None) -> dict:
    """Write the item map to ``out`` (.png or .html); returns the payload drawn. ``label``
    names the column that names items (hover, landmarks); default: detected."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ItemvecError(f"--out {out}: unknown extension; use .png or .html")
    item_column(embeddings, column)  # a wrong --color-by fails before the slow projection
    label_column(embeddings, label)  # and so does a wrong --label
    coords, used = project(embeddings.vectors, method, seed)
    payload = map_payload(embeddings, coords, column, used, label)
    title = title or f"itemvec item map ({len(embeddings)} items, {used})"
    if suffix == ".png":
        write_output(out, png_bytes(map_figure(payload, title)))
    else:
        write_output(out, map_html(payload, title))
    return payload


def plot_curves(manifest: dict, out: Path) -> Path:
    stats = manifest.get("stats", {})
    return write_output(out, png_bytes(curves_figure(stats.get("history", []),
                                                     stats.get("best_epoch"))))
