"""``itemvec update``: fold new events into a bundle and write a new one beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from itemvec.cli.options import (
    Context,
    ContextKind,
    Event,
    EventWeights,
    Item,
    ItemKey,
    Quiet,
    SessionGap,
    Time,
    configure_logging,
)
from itemvec.train.update import UpdateConfig
from itemvec.train.update import update as run_update


def register(app: typer.Typer) -> None:
    @app.command()
    def update(
        bundle: Annotated[Path, typer.Argument(help="Bundle to update (only read, never changed).")],
        events: Annotated[Path, typer.Argument(help="New events: .csv/.tsv, .parquet or .jsonl.")],
        out: Annotated[Path, typer.Option("--out", help="New bundle directory (written "
                                          "atomically; must differ from BUNDLE).")],
        context: Context = None,
        item: Item = None,
        time: Time = None,
        event: Event = None,
        event_weights: EventWeights = None,
        session_gap: SessionGap = None,
        context_kind: ContextKind = None,
        items: Annotated[Path | None, typer.Option(
            "--items", help="Item table for new (or changed) items; the bundle's rows are kept "
            "for the rest.")] = None,
        item_key: ItemKey = "item_id",
        decay_half_life: Annotated[str | None, typer.Option(
            "--decay-half-life", help="Age the stored counts: they count 0.5 ** (time from the "
            "bundle's newest event to the newest new event / this), e.g. 30d; needs --time.  "
            "[default: the bundle's time_decay_half_life, else none]")] = None,
        epochs: Annotated[int, typer.Option(
            "--epochs", help="Most epochs of continued training (early stopping on the newest "
            "new contexts may end sooner); 0 only places the new items.")] = 3,
        start: Annotated[str, typer.Option(
            "--start", help="refresh: restart from the spectral start of the merged counts, "
            "rotated onto the stored vectors (as a retrain would start, without re-reading old "
            "events); stored: continue from the stored weights (vectors move least).")] =
            "refresh",
        anchors: Annotated[str, typer.Option(
            "--anchors", help="all: train every item row; touched: only the rows the new "
            "events changed (the softmax still covers every item; --start stored only).")] =
            "all",
        lr: Annotated[float | None, typer.Option(
            "--lr", help="Learning rate.  [default: the bundle's]")] = None,
        quiet: Quiet = False,
    ) -> None:
        """Add new events to a bundle's counts, add new items, continue training: a new bundle.

        Column options default to the bundle's own (those it was trained with).
        """
        configure_logging(quiet)
        settings = UpdateConfig(epochs=epochs, start=start, anchors=anchors, lr=lr,
                                decay_half_life=decay_half_life)
        ingest = dict(context=context, item=item, time=time, event=event,
                      event_weights=event_weights, session_gap=session_gap,
                      context_kind=context_kind)
        result = run_update(bundle, events, out=out, items=items, item_key=item_key,
                            ingest=ingest, settings=settings, progress=not quiet)
        added = result.lineage["added"]
        typer.echo(f"updated {bundle} with {added['events']} events in {added['contexts']} "
                   f"contexts: {added['new_items']} new items, {added['pairs']} pairs, "
                   f"{len(result.embeddings)} items in all, {result.stats['epochs_run']} epochs "
                   f"in {result.stats['train_seconds']:.1f}s; bundle: {out}")
