"""Options and set-up shared by every ``itemvec`` command module (``main`` and the groups).

Command modules import these from here, never from ``main``: ``main`` imports the command
modules to register them, so an import back would be a cycle.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from itemvec.config import PipelineConfig, load_config

# -- shared options ----------------------------------------------------------------------------
Context = Annotated[str, typer.Option("--context", help="Column with the session, basket, order "
                                      "or user id that groups co-occurring events.")]
Item = Annotated[str, typer.Option("--item", help="Column with the item id (read as a string).")]
Time = Annotated[str | None, typer.Option("--time", help="Column with a timestamp (number or "
                                          "ISO-8601); orders events and splits by time.")]
Event = Annotated[str | None, typer.Option("--event", help="Column with the event type.")]
EventWeights = Annotated[str | None, typer.Option(
    "--event-weights", help="Weights per event type, e.g. view=1,cart=3,purchase=5.")]
SessionGap = Annotated[str | None, typer.Option(
    "--session-gap", help="Split a context into sessions at gaps longer than this (e.g. 30m); "
    "needs --time.")]
ContextKind = Annotated[str | None, typer.Option(
    "--context-kind", help="session (order matters, windowed pairs), basket (all pairs) or auto "
    "(session when --time is given).  [default: auto]")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]
ItemKey = Annotated[str, typer.Option("--item-key", help="Id column of --items.")]
Window = Annotated[int | None, typer.Option(
    "--window", help="Sessions: count pairs at most this far apart.  [default: 5]")]
MinCount = Annotated[int | None, typer.Option(
    "--min-count", help="Drop items seen in fewer contexts.  [default: 1]")]
MemoryLimit = Annotated[str | None, typer.Option(
    "--memory-limit", help="Streamed counting (train --streaming, cooccur --engine local): "
    "memory for partial pair sums before spilling to disk, e.g. 4G.  [default: 4G]")]


def configure_logging(quiet: bool) -> None:
    """Info logs on stderr unless ``--quiet``; the trainer's per-epoch lines stay at warning."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not quiet:
        logging.getLogger("itemvec.train.trainer").setLevel(logging.WARNING)


def _merge(config: PipelineConfig, section: str, **values: Any) -> None:
    """Apply the CLI options that were given on top of a section of the config."""
    current = getattr(config, section).__dict__.copy()
    current.update({k: v for k, v in values.items() if v is not None})
    setattr(config, section, type(getattr(config, section))(**current))


def build_config(config_file: Path | None, ingest: dict, cooccurrence: dict,
                 training: dict) -> PipelineConfig:
    """``--config FILE`` (or the defaults) with the options that were given on top."""
    config = load_config(config_file) if config_file else PipelineConfig()
    _merge(config, "ingest", **ingest)
    _merge(config, "cooccurrence", **cooccurrence)
    _merge(config, "training", **training)
    return config
