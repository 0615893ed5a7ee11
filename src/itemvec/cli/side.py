"""``itemvec embed``: embed new items into a trained model from their features alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from itemvec.cli.options import ItemKey
from itemvec.store.embed import embed_into_bundle
from itemvec.train.pipeline import read_item_table


def register(app: typer.Typer) -> None:
    @app.command()
    def embed(
        bundle: Annotated[Path, typer.Argument(help="Bundle trained with --items (features).")],
        items: Annotated[Path, typer.Option("--items", help="New items: same feature columns "
                                            "as the training item table.")],
        item_key: ItemKey = "item_id",
        out: Annotated[Path | None, typer.Option(
            "--out", help="Write the extended bundle here (default: update BUNDLE in place, "
            "atomically).")] = None,
    ) -> None:
        """Embed items (cold: never seen in behaviour) without retraining; similar, recommend
        and export then include them."""
        table = read_item_table(items, item_key)
        target, report = embed_into_bundle(bundle, table, out)
        typer.echo(f"embedded {report['embedded']} items ({report['replaced']} re-embedded, "
                   f"{report['skipped_warm']} skipped: learned from behaviour); "
                   f"{report['items']} items in {target}")
