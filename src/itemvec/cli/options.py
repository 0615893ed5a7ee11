"""CLI options declared from config fields: help, default and flag come from ``itemvec.config``.

``@config_options("training.dim", ...)`` adds one option per field to a command; the command
receives the options the user gave as ``settings`` ({"training.dim": 32}), applied over the
``--config`` file with ``PipelineConfig.with_values``, so a flag always wins over the file and a
file can set whatever a flag can. Options default to None (= not given), so the help's default
is the field's, written once in the config.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from itemvec.config import FLAT_NAMES, PipelineConfig, field_info, load_config, meta, split_path

SETTINGS = "settings"  # the parameter a decorated command receives the given options in


def flag_of(path: str) -> str:
    """The option name of a field: its ``flag`` metadata, else --flat-name."""
    info = field_info(path)
    flat = next(name for name, where in FLAT_NAMES.items() if ".".join(where) == path)
    return meta(info, "flag") or "--" + flat.replace("_", "-")


def help_of(path: str) -> str:
    """The field's description with its default, as ``--help`` shows it."""
    info = field_info(path)
    shown = meta(info, "default_text") or _shown(info.default)
    return f"{info.description}  [default: {shown}]" if shown else str(info.description)


def _shown(default: Any) -> str:
    if default is None or default == {}:
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def cli_type(path: str) -> type:
    """int or float where the field holds one (typer then rejects '--dim abc'); else str, which
    the config parses (durations, sizes, event weights, choices)."""
    info = field_info(path)
    annotation = info.annotation
    if meta(info, "parse"):
        return str
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else str
    if annotation is bool:
        if not _is_negative_flag(path):
            raise TypeError(f"{path}: boolean settings have no CLI option; set them with --config")
        return bool
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation if annotation in (int, float) else str


def _is_negative_flag(path: str) -> bool:
    """A boolean field that defaults to true and has a --no-... flag (``ingest.header``)."""
    info = field_info(path)
    return info.default is True and meta(info, "flag").startswith("--no-")


def option(path: str) -> Any:
    """``Annotated[T | None, typer.Option(...)]`` for one field, e.g. for a shared alias; a
    boolean field with a --no-X flag is the pair --X/--no-X, so a command that starts from a
    stored setting (``update``) can switch it either way."""
    if cli_type(path) is bool:
        negative = flag_of(path)
        pair = f"--{negative.removeprefix('--no-')}/{negative}"
        return Annotated[bool | None, typer.Option(pair, help=str(field_info(path).description),
                                                   show_default=False)]
    return Annotated[cli_type(path) | None, typer.Option(flag_of(path), help=help_of(path),
                                                          show_default=False)]


def config_options(*paths: str) -> Callable[[Callable], Callable]:
    """Add an option per field in ``paths`` to a typer command; see the module docstring."""
    for path in paths:
        split_path(path)  # a typo fails at import, naming the path

    def decorate(command: Callable) -> Callable:
        names = {path: path.replace(".", "__") for path in paths}
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.name != SETTINGS]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=option(path)) for path, name in names.items()]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {path: kwargs.pop(name) for path, name in names.items()}
            return command(**kwargs, **{SETTINGS: {k: v for k, v in given.items()
                                                   if v is not None}})

        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper

    return decorate


ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="JSON or TOML config file (the shape of a bundle manifest's config: "
    "sections ingest, cooccurrence, training, query, side, streaming, update, serve); it can "
    "set every option, and options given on the command line win over it.")]


def build_config(config_file: Path | None, settings: dict[str, Any]) -> PipelineConfig:
    """The ``--config`` file (or the defaults) with the given options applied, validated."""
    config = load_config(config_file) if config_file else PipelineConfig()
    return config.with_values(settings) if settings else config


def configure_logging(quiet: bool) -> None:
    """Info logs on stderr unless ``--quiet``; the trainer's per-epoch lines stay at warning."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not quiet:
        logging.getLogger("itemvec.train.trainer").setLevel(logging.WARNING)


# -- options several command modules share: help and defaults from the config fields ------------
Context = option("ingest.context")
Item = option("ingest.item")
Time = option("ingest.time")
Event = option("ingest.event")
EventWeights = option("ingest.event_weights")
SessionGap = option("ingest.session_gap")
ContextKind = option("ingest.context_kind")
ItemKey = option("side.item_key")
Window = option("cooccurrence.window")
MinCount = option("cooccurrence.min_count")
MemoryLimit = option("streaming.memory_limit")
Label = Annotated[str | None, typer.Option(
    "--label", help="Item-table column shown beside ids, or none.  [default: the first of "
    "title, product_name, movie_title, item_name, display_name, name, label, description "
    "(any case) the table has]")]


class ColdMode(StrEnum):
    """How ``similar`` ranks cold items (``ItemEmbeddings.cold_offset``)."""
    calibrated = "calibrated"
    include = "include"
    exclude = "exclude"


Cold = Annotated[ColdMode, typer.Option(
    "--cold", help="Cold items (item table only, never in behaviour): calibrated (their cosine "
    "carries the offset chosen on validation at train time), include (plain cosine) or "
    "exclude.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]
INGEST_OPTIONS = ("ingest.context", "ingest.item", "ingest.time", "ingest.event",
                  "ingest.event_weights", "ingest.session_gap", "ingest.context_kind")
READ_OPTIONS = ("ingest.order", "ingest.format", "ingest.sep", "ingest.header", "ingest.columns",
                "ingest.encoding")  # how the files are laid out; every command reading a log
ITEMS_READ_OPTIONS = ("side.items_sep", "side.items_columns", "side.items_encoding")
SIDE_OPTIONS = ("side.items", "side.item_key", "side.features", "side.relations",
                "side.relation_weight", "side.mode", "side.max_warm_drop")
TRAIN_OPTIONS = (*INGEST_OPTIONS, *READ_OPTIONS, *SIDE_OPTIONS, *ITEMS_READ_OPTIONS,
                 "cooccurrence.min_count", "cooccurrence.window",
                 "cooccurrence.min_support", "training.objective", "training.dim",
                 "training.epochs", "training.history_epochs", "training.temperature",
                 "training.lr", "training.seed", "training.device", "training.precision",
                 "training.accumulate", "training.pairs_per_epoch", "training.checkpoint_every",
                 "training.checkpoint_dir", "streaming.mode", "streaming.memory_limit")
