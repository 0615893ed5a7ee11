"""``itemvec plot`` and ``itemvec report``: what a person looks at to trust a model."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from itemvec.analysis.plots import default_color_column, plot_curves, plot_map, write_output
from itemvec.analysis.report import build_report, read_evaluation
from itemvec.cli.options import Label
from itemvec.query.embeddings import load_embeddings
from itemvec.util.errors import ItemvecError

logger = logging.getLogger(__name__)

Bundle = Annotated[Path, typer.Argument(help="Model bundle directory (from itemvec train).")]
Method = Annotated[str, typer.Option(
    "--method", help="2-D projection: auto (t-SNE up to 5,000 items, else PCA), tsne, pca, or "
    "umap (needs pip install 'itemvec[umap]').")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the projection.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress spinner.")]


@contextlib.contextmanager
def _step(text: str, quiet: bool):
    """A spinner on stderr for a step that may take seconds (t-SNE, probes)."""
    if quiet:
        yield
        return

    with Console(stderr=True).status(text):
        yield


def register(app: typer.Typer) -> None:
    app.command()(plot)
    app.command()(report)


def plot(
    bundle: Bundle,
    out: Annotated[Path, typer.Option(
        "--out", help="Item map to write: FILE.png (picture) or FILE.html (interactive: hover "
        "shows id, title and the coloured column; self-contained).")],
    color_by: Annotated[str | None, typer.Option(
        "--color-by", help="Item-table column that colours the points.  [default: category if "
        "the table has one, else count (popularity)]")] = None,
    method: Method = "auto",
    curves: Annotated[Path | None, typer.Option(
        "--curves", help="Training loss / validation curves PNG.  [default: OUT's name with "
        "_training.png, when the bundle has a training history]")] = None,
    no_curves: Annotated[bool, typer.Option("--no-curves", help="Skip the curves PNG.")] = False,
    label: Label = None,
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Draw a 2-D map of the items and the training curves.

    A numeric --color-by gets a colour bar, a 0/1 column two distinct colours, a category
    column a palette; the PNG names the most popular items by their label.
    """
    embeddings = load_embeddings(bundle)
    column = color_by if color_by is not None else default_color_column(embeddings)
    with _step(f"projecting {len(embeddings)} items ({method})", quiet):
        payload = plot_map(embeddings, out, column, method, seed, label=label)
    typer.echo(f"wrote the map of {len(embeddings)} items ({payload['method']}"
               f"{', coloured by ' + column if column else ''}) to {out}")
    history = embeddings.metadata.get("stats", {}).get("history")
    if no_curves or (curves is None and not history):
        return
    curves = curves or out.with_name(f"{out.stem}_training.png")
    if not history:
        raise ItemvecError(f"{bundle}: the bundle has no training history to draw with --curves")
    plot_curves(embeddings.metadata, curves)
    typer.echo(f"wrote the training curves ({len(history)} epochs) to {curves}")


def report(
    bundle: Bundle,
    out: Annotated[Path, typer.Option("--out", help="HTML report to write (self-contained).")],
    evaluation: Annotated[Path | None, typer.Option(
        "--evaluation", help="Metrics JSON from itemvec evaluate --json.  [default: "
        "BUNDLE/evaluation.json, written by itemvec evaluate --out BUNDLE]")] = None,
    category: Annotated[str | None, typer.Option(
        "--category", help="Item-table column to probe the vectors with.  [default: category "
        "if the bundle's item table has one]")] = None,
    method: Method = "auto",
    seed: Seed = 0,
    quiet: Quiet = False,
) -> None:
    """Write an HTML report: metrics vs baselines, popularity, categories, map, neighbours."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise ItemvecError(f"--out {out}: the report is HTML; use a .html name")
    metrics = read_evaluation(bundle, evaluation)
    with _step("measuring the bundle (neighbours, probes, map)", quiet):
        page = build_report(bundle, metrics, category, method, seed)
    write_output(out, page)
    found = "with" if metrics else "without"
    typer.echo(f"wrote the report ({found} evaluation metrics) to {out}")
