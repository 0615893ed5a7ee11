"""Result tables for the terminal: rank, id, label and score, fitted to the terminal's width.

Results used to print every item-table column, so a wide table (movielens' 19 genre flags)
became 25 empty cells at 80 columns. Now a result row is what a person scans: its rank, its id,
its label (``itemvec.query.labels``; cut with an ellipsis to fit) and its score. The width is the
terminal's (``shutil.get_terminal_size``: ``COLUMNS``, else the tty, else 100).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.table import Table

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.labels import item_labels

FALLBACK_WIDTH = 100
COLD_MARK = " (cold)"
MIN_WIDTH = 40


def terminal_width() -> int:
    """Columns available for a table (at least ``MIN_WIDTH``)."""
    return max(MIN_WIDTH, shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns)


def results_table(title: str, ids: Sequence[str], scores: Sequence[float],
                  labels: Sequence[str | None] | None = None, label_name: str = "label",
                  width: int | None = None, digits: int = 4,
                  cold: Sequence[bool] | None = None) -> str:
    """The rendered table: ``#``, ``item_id``, the label column (when given) and ``score``;
    cold items (no behaviour, placed by features) get ``COLD_MARK`` after their id.

    Widths are decided here, not by rich's shrinking (which cut the rank and score columns to
    an ellipsis): rank, id (up to a third of the width) and score keep their width, and the
    label gets the rest, cut with an ellipsis.
    """
    width = width or terminal_width()
    ids = [str(i) + (COLD_MARK if cold is not None and cold[n] else "")
           for n, i in enumerate(ids)]
    shown = [f"{float(s):.{digits}f}" for s in scores]
    rank_w = len(str(len(ids))) if ids else 1
    id_w = min(max([len("item_id"), *map(len, ids)]), max(8, width // 3))
    score_w = max([len("score"), *map(len, shown)])
    columns = 3 if labels is None else 4
    label_w = width - rank_w - id_w - score_w - (3 * columns + 1)  # borders and padding
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", no_wrap=True, min_width=rank_w)
    table.add_column("item_id", no_wrap=True, min_width=id_w, max_width=id_w)
    if labels is not None:
        table.add_column(_cut(label_name, label_w), no_wrap=True, max_width=max(label_w, 1))
    table.add_column("score", justify="right", no_wrap=True, min_width=score_w)
    for rank, (item, score) in enumerate(zip(ids, shown, strict=True), start=1):
        label = [] if labels is None else [_cut(labels[rank - 1] or "", label_w)]
        table.add_row(str(rank), _cut(item, id_w), *label, score)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, highlight=False, emoji=False,
            markup=False).print(table)
    return buffer.getvalue()


def _cut(text: str, width: int) -> str:
    """``text`` shortened to ``width`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def print_results(title: str, ids: Sequence[str], scores: Sequence[float],
                  labels: Sequence[str | None] | None = None, label_name: str = "label",
                  cold: Sequence[bool] | None = None) -> None:
    """Print ``results_table`` on stdout."""
    typer.echo(results_table(title, ids, scores, labels, label_name, cold=cold), nl=False)


def labelled_json(payload: dict, embeddings: ItemEmbeddings, column: str | None) -> dict:
    """``payload`` with a ``cold`` list (True: no behaviour, placed by features) and, when
    items have labels, a ``labels`` list beside its ``items``."""
    cold = embeddings.is_cold(payload["items"]).tolist()
    labels = item_labels(embeddings, payload["items"], column)
    marked = {**payload, "cold": cold}
    return marked if labels is None else {**marked, "labels": labels}
