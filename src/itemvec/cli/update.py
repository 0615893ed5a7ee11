"""``itemvec update``: fold new events into a bundle and write a new one beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from itemvec.cli.options import (
    INGEST_OPTIONS,
    READ_OPTIONS,
    ConfigFile,
    Quiet,
    config_options,
    configure_logging,
)
from itemvec.config import PipelineConfig, load_config
from itemvec.train import update as updating

UPDATE_OPTIONS = ("update.decay_half_life", "update.epochs", "update.start", "update.anchors",
                  "update.lr", "update.batch_size", "update.patience", "update.eval_every",
                  "update.validation_fraction", "update.init")


def update_settings(config_file: Path | None,
                    settings: dict[str, Any]) -> tuple[PipelineConfig, dict[str, Any]]:
    """(config, ingest overrides): the ``--config`` file with the options given applied; ingest
    overrides are the keys the file names and the ingest options given, checked against the
    bundle's own ingest settings by ``update`` (a --session-gap may rely on its --time)."""
    loaded = load_config(config_file) if config_file else PipelineConfig()
    given = {f"ingest.{k}": getattr(loaded.ingest, k) for k in loaded.ingest.model_fields_set}
    given.update({k: v for k, v in settings.items() if k.startswith("ingest.")})
    config = loaded.with_values({k: v for k, v in settings.items() if k not in given})
    return config, {path.split(".", 1)[1]: value for path, value in given.items()}


def register(app: typer.Typer) -> None:
    @app.command()
    @config_options(*INGEST_OPTIONS, *READ_OPTIONS, "side.items", "side.item_key", *UPDATE_OPTIONS)
    def update(
        bundle: Annotated[Path, typer.Argument(help="Bundle to update (only read, never changed).")],
        events: Annotated[Path, typer.Argument(help="New events: .csv/.tsv, .parquet or .jsonl "
                                               "(a glob or directory too), read as the bundle's "
                                               "were unless the layout options say otherwise.")],
        out: Annotated[Path, typer.Option("--out", help="New bundle directory (written "
                                          "atomically; must differ from BUNDLE).")],
        config_file: ConfigFile = None,
        quiet: Quiet = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Add new events to a bundle's counts, add new items, continue training: a new bundle.

        Column options default to the bundle's own (those it was trained with); --config reads
        the update section, side.items / side.item_key and the ingest keys the file names. An
        --items table gives new (or changed) items; the bundle's rows are kept for the rest.
        """
        config, ingest = update_settings(config_file, settings or {})
        configure_logging(quiet)
        result = updating.update(bundle, events, out=out, items=config.side.items,
                            item_key=config.side.item_key, ingest=ingest,
                            settings=config.update, progress=not quiet)
        added = result.lineage["added"]
        typer.echo(f"updated {bundle} with {added['events']} events in {added['contexts']} "
                   f"contexts: {added['new_items']} new items, {added['pairs']} pairs, "
                   f"{len(result.embeddings)} items in all, {result.stats['epochs_run']} epochs "
                   f"in {result.stats['train_seconds']:.1f}s; bundle: {out}")
