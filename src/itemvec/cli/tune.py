"""``itemvec tune``: search hyper-parameters with Optuna, then train the winner on every event."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm.auto import tqdm

from itemvec.cli.options import (
    TRAIN_OPTIONS,
    ConfigFile,
    Quiet,
    build_config,
    config_options,
    configure_logging,
)
from itemvec.estimator import ItemVec

EVENTS_HELP = ("Event log: one or more files, globs or directories, read as itemvec train reads "
               "them.")


def echo_line(line: str) -> None:
    """A trial's summary line, printed above the progress bars."""
    tqdm.write(line, file=sys.stdout)


def tune_summary(model: ItemVec, out: Path) -> str:
    summary = model.tuning_
    best = " ".join(f"{k}={v}" for k, v in summary["best_params"].items())
    return (f"study {summary['study']}: {summary['finished']} finished trials; best validation "
            f"HR@20 ({summary['metric']}) {summary['best_value']:.4f} in trial "
            f"{summary['best_trial']}: {best}; bundle: {out} (best_config.json, tuning.html)")


def register(app: typer.Typer) -> None:
    @app.command()
    @config_options(*TRAIN_OPTIONS)
    def tune(
        events: Annotated[list[Path], typer.Argument(help=EVENTS_HELP)],
        out: Annotated[Path, typer.Option("--out", help="Bundle of the best configuration trained "
                                          "on every event, with best_config.json, tuning.json "
                                          "and tuning.html in it.")],
        trials: Annotated[int, typer.Option("--trials", help="Trials to run now (a resumed study "
                                            "keeps its earlier ones; 0: only train the best "
                                            "found so far).")] = 20,
        timeout: Annotated[str | None, typer.Option(
            "--timeout", help="Start no new trial after this long, e.g. 1h.  [default: none]")]
            = None,
        n_jobs: Annotated[int, typer.Option("--n-jobs", help="Trials run at once (threads).")]
            = 1,
        storage: Annotated[str | None, typer.Option(
            "--storage", help="Optuna storage URL, e.g. sqlite:///tune.db: the study survives a "
            "stop or kill and continues when started again.  [default: in memory]")] = None,
        study: Annotated[str, typer.Option("--study", help="Study name in --storage.")] =
            "itemvec",
        metric: Annotated[str, typer.Option(
            "--metric", help="Objective: validation HR@20 of mean (of i2i and s2i), i2i or "
            "s2i.")] = "mean",
        space: Annotated[Path | None, typer.Option(
            "--space", help="JSON or TOML file overriding the search space, e.g. {\"dim\": "
            "{\"low\": 32, \"high\": 128}, \"window\": null}.  [default: "
            "itemvec.train.tuning.SPACE]")] = None,
        config_file: ConfigFile = None,
        quiet: Quiet = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Search hyper-parameters on a held-out slice, then train the best on every event.

        Settings given as options or in --config are fixed; the rest of the space is searched
        (TPE; trials in the bottom quarter at an epoch are pruned).
        """
        config = build_config(config_file, settings or {})
        configure_logging(quiet)
        ingest, side = config.ingest, config.side
        model = ItemVec.from_config(config).tune(
            events[0] if len(events) == 1 else list(events), ingest.context, ingest.item,
            ingest.time, ingest.event, items=side.items, item_key=side.item_key,
            relations=side.relations, trials=trials, timeout=timeout, n_jobs=n_jobs,
            storage=storage, study=study, metric=metric, space=space, out=out,
            progress=not quiet, echo=echo_line)
        typer.echo(tune_summary(model, out))
