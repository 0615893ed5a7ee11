"""The ``itemvec`` command line. Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import itemvec.cli as commands
from itemvec.cli.demo import run_demo
from itemvec.cli.display import labelled_json, print_results
from itemvec.cli.options import (
    INGEST_OPTIONS,
    ITEMS_READ_OPTIONS,
    READ_OPTIONS,
    TRAIN_OPTIONS,
    Cold,
    ColdMode,
    ConfigFile,
    Context,
    ContextKind,
    Event,
    EventWeights,
    Item,
    ItemKey,
    Label,
    Quiet,
    SessionGap,
    Time,
    build_config,
    config_options,
    configure_logging,
)
from itemvec.data.ingest import read_events
from itemvec.data.synth import generate, write, write_streamed
from itemvec.estimator import ItemVec
from itemvec.query.embeddings import load_embeddings
from itemvec.query.labels import item_labels, label_column, label_lookup
from itemvec.store.bundle import refuse_inside_bundle
from itemvec.store.export import export_format, export_vectors
from itemvec.train import distributed as distributed_training
from itemvec.train.pipeline import evaluate_log, items_reading, read_item_table, save_model
from itemvec.train.tracking import close_all, make_trackers
from itemvec.util.errors import DataError, ItemvecError
from itemvec.util.files import atomic_write_bytes
from itemvec.util.version import VERSION

# rich_markup_mode=None: help texts are plain text, so "[default: 5]" and "itemvec[track]" in them
# are shown as written instead of being eaten as rich markup tags.
app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Self-supervised item embeddings from behaviour logs.")
logger = logging.getLogger("itemvec")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"itemvec {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Self-supervised item embeddings from behaviour logs."""



EVENTS_HELP = ("Event log: one or more files, globs or directories (.csv/.tsv/.parquet/.jsonl/"
               ".inter, each also .gz/.zst; other text with --sep; --format sequences/baskets "
               "for one context per line).")


def _events_argument(events: list[Path]) -> Path | list[Path]:
    """One path as itself (the streaming path reads a single file), several as a list."""
    return events[0] if len(events) == 1 else list(events)


# -- train -------------------------------------------------------------------------------------
@app.command()
@config_options(*TRAIN_OPTIONS)
def train(
    events: Annotated[list[Path], typer.Argument(help=EVENTS_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write (atomically).")],
    config_file: ConfigFile = None,
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="Write loss and validation curves to this TensorBoard log dir "
        "(needs pip install 'itemvec[track]').  [default: off]")] = None,
    log_json: Annotated[Path | None, typer.Option(
        "--log-json", help="Write one JSON line per epoch (epoch, loss, validation, seconds) to "
        "this file, or to DIR/training_log.jsonl for a directory.  [default: off]")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run from its checkpoint; give the same data "
        "and options.")] = False,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Data-parallel training across the processes of torchrun "
        "(gloo on CPU, NCCL on CUDA); rank 0 writes the bundle.")] = False,
    quiet: Quiet = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Train item embeddings from an event log and write a model bundle."""
    config = build_config(config_file, settings or {})  # bad settings fail here, before work
    configure_logging(quiet)
    events = _events_argument(events)
    trackers = make_trackers(tensorboard, log_json)
    options = dict(out=out, progress=not quiet, callbacks=trackers, resume=resume)
    try:
        if distributed:
            model = ItemVec.from_trained(distributed_training.train(events, config, **options),
                                         config)
        else:
            ingest, side = config.ingest, config.side
            model = ItemVec.from_config(config).fit(
                events, ingest.context, ingest.item, ingest.time, ingest.event, items=side.items,
                item_key=side.item_key, relations=side.relations, **options)
    finally:
        close_all(trackers)
    typer.echo(training_summary(model.stats_, out))


def training_summary(stats: dict, out: Path) -> str:
    """One line: what was trained, how long each stage took, where the bundle is."""
    stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in stats["seconds"].items())
    return (f"trained {stats['items']} items from {stats['events']} events in "
            f"{stats['contexts']} contexts in {stats['train_seconds']:.1f}s ({stages}; best "
            f"epoch {stats['best_epoch']}); bundle: {out}" + kind_line(stats))


def kind_line(stats: dict) -> str:
    """A second line when ``auto`` chose sessions or baskets from the data: what and why."""
    decision = stats.get("context_kind_decision") or {}
    if decision.get("chosen_by") != "data":
        return ""
    return (f"\ncontexts read as {decision['kind']}s (--context-kind auto): {decision['reason']}")


# -- export / similar / recommend ------------------------------------------------------------------
@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    out: Annotated[Path, typer.Option("--out", help="Output file: .parquet, .jsonl, .csv or "
                                      ".npy (ids beside it in NAME.ids.txt), or any name with "
                                      "--format.")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="parquet, jsonl, csv, npy, word2vec (text) or word2vec-binary "
        "(both read by gensim's KeyedVectors.load_word2vec_format).  [default: from --out's "
        "extension]")] = None,
) -> None:
    """Write every item's id and vector (float32) for other tools."""
    chosen = export_format(out, fmt)  # a wrong name fails before the bundle is read
    embeddings = load_embeddings(bundle)
    written = export_vectors(out, embeddings.item_ids, embeddings.vectors, chosen)
    extra = f" (ids in {written[1]})" if len(written) > 1 else ""
    typer.echo(f"wrote {len(embeddings)} embeddings of dim {embeddings.dim} to {out} as "
               f"{chosen}{extra}")


@app.command()
def similar(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    item_id: Annotated[str, typer.Argument(help="Item id to find neighbours of.")],
    n: Annotated[int, typer.Option("-n", help="How many neighbours.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    label: Label = None,
    cold: Cold = ColdMode.calibrated,
) -> None:
    """Items most similar (cosine) to ITEM_ID; cold items are marked."""
    _check_n(n)
    embeddings = load_embeddings(bundle)
    column = label_column(embeddings, label)
    ids, scores = embeddings.similar_items(item_id, n=n, cold=cold.value)
    items = [str(i) for i in ids]
    if as_json:
        typer.echo(json.dumps(labelled_json(
            {"item_id": item_id, "items": items, "scores": [round(float(s), 6) for s in scores]},
            embeddings, column)))
        return
    own = item_labels(embeddings, [item_id], column)
    about = f"{item_id} ({own[0]})" if own and own[0] else item_id
    print_results(f"items similar to {about}", items, scores,
                  item_labels(embeddings, items, column), column or "label",
                  cold=embeddings.is_cold(items).tolist())


def _check_n(n: int) -> None:
    if n < 1 or n > 10_000:
        raise ItemvecError(f"-n must be between 1 and 10000, got {n}")


def read_queries(path: Path) -> list[tuple[Any, list[str]]]:
    """Lines of {"id": ..., "history": [...]} with errors naming the file and line."""
    queries = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        history = record.get("history") if isinstance(record, dict) else None
        if not isinstance(history, list):
            raise DataError(f"{path}:{number}: expected {{\"id\": ..., \"history\": [...]}}")
        queries.append((record.get("id"), [str(h) for h in history]))
    if not queries:
        raise DataError(f"{path}: no queries")
    return queries


@app.command()
def recommend(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    queries: Annotated[Path, typer.Option("--queries", help='JSONL: {"id": 7, "history": '
                                          '["a", "b"]} per line, oldest first.')],
    out: Annotated[Path, typer.Option("--out", help="JSONL output: id, items, scores (and "
                                      "labels, when the item table has a label column).")],
    n: Annotated[int, typer.Option("-n", help="Recommendations per query.")] = 20,
    label: Label = None,
    quiet: Quiet = False,
) -> None:
    """Recommend items for each history in --queries; history items are excluded.

    An empty history gets the most popular items; a history none of whose items the model
    knows gets none (listed on stderr), and if that is every query the command fails.
    """
    configure_logging(quiet)
    _check_n(n)
    embeddings = load_embeddings(bundle)
    records = read_queries(queries)
    lookup = label_lookup(embeddings, label_column(embeddings, label))  # once, not per query
    lines, skipped, unanswered = [], 0, []
    for start in range(0, len(records), 1024):
        chunk = records[start:start + 1024]
        result = embeddings.recommend_batch([h for _, h in chunk], n=n)
        skipped += int(result.skipped.sum())
        for (query_id, history), row_ids, row_scores, unknown, row_cold in zip(
                chunk, *result, result.skipped, result.cold, strict=True):
            found = row_scores > -float("inf")  # rows are padded to n when fewer items qualify
            if history and unknown == len(history):  # no known item: not popularity in disguise
                unanswered.append(query_id)
                found[:] = False
            row = {"id": query_id, "items": row_ids[found].tolist(),
                   "scores": [round(float(s), 6) for s in row_scores[found]]}
            if lookup is not None:
                row["labels"] = [lookup.get(i) for i in row["items"]]
            row["cold"] = row_cold[found].tolist()
            lines.append(json.dumps(row))
    check_some_known(unanswered, records)
    refuse_inside_bundle(out)
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    typer.echo(f"wrote {len(lines)} recommendations to {out}; skipped {skipped} unknown "
               "history items" + unanswered_note(unanswered), err=True)


def check_some_known(unanswered: list, records: list[tuple[Any, list[str]]]) -> None:
    """Every non-empty history unknown is a wrong file or id column, not a cold start: fail."""
    asked = sum(1 for _, history in records if history)
    if asked and len(unanswered) == asked:
        example = next(h for _, h in records if h)
        raise ItemvecError(f"--queries: no history item of any query is in the model (e.g. "
                           f"{', '.join(example[:3])}); check the ids match the training data's "
                           "item column")


def unanswered_note(unanswered: list) -> str:
    """The stderr note about queries left empty because none of their history was known."""
    if not unanswered:
        return ""
    shown = ", ".join(json.dumps(q) for q in unanswered[:5])
    more = f" and {len(unanswered) - 5} more" if len(unanswered) > 5 else ""
    return (f"; {len(unanswered)} queries had no known history item and got no "
            f"recommendations (ids {shown}{more})")


# -- evaluate / demo / synth -------------------------------------------------------------------
@app.command()
@config_options(*READ_OPTIONS, *ITEMS_READ_OPTIONS)
def evaluate(
    events: Annotated[list[Path], typer.Argument(help="Event log to split, train on and score: "
                                                 "one or more files, globs or directories.")],
    context: Context = None,
    item: Item = None,
    time: Time = None,
    event: Event = None,
    event_weights: EventWeights = None,
    session_gap: SessionGap = None,
    context_kind: ContextKind = None,
    baselines: Annotated[str, typer.Option(
        "--baselines", help="Comma-separated baselines to score beside itemvec: popularity, "
        "itemknn, ease (numpy/scipy), item2vec (gensim) and als (implicit); the last two need "
        "pip install 'itemvec[bench]'.")] =
        "popularity,itemknn",
    k: Annotated[int, typer.Option("-k", help="Cut-off for HR/NDCG/MRR.")] = 20,
    max_queries: Annotated[int | None, typer.Option(
        "--max-queries", help="Score at most this many test queries per task.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Split and training seed.")] = 0,
    config_file: ConfigFile = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Also write the trained bundle, with the metrics in DIR/evaluation.json "
        "(what itemvec report DIR reads).")] = None,
    report: Annotated[Path | None, typer.Option("--json", help="Write the metrics as JSON.")] =
        None,
    items: Annotated[Path | None, typer.Option(
        "--items", help="Item table (id + columns such as category, title) stored in the --out "
        "bundle, for plots and reports.")] = None,
    item_key: ItemKey = "item_id",
    quiet: Quiet = False,
    settings: dict[str, Any] | None = None,
) -> None:
    """Split contexts 80/10/10 by time, train, and rank ALL items for each test query."""
    configure_logging(quiet)
    given = dict(zip(INGEST_OPTIONS, (context, item, time, event, event_weights, session_gap,
                                      context_kind), strict=True))
    config = build_config(config_file, {**{k: v for k, v in given.items() if v is not None},
                                        **(settings or {}), "training.seed": seed})
    log = read_events(_events_argument(events), config.ingest)
    table = read_item_table(items, item_key, items_reading(config.side)) \
        if items is not None else None
    names = [b.strip() for b in baselines.split(",") if b.strip()]
    result = evaluate_log(log, config, names, k=k, seed=seed, max_queries=max_queries,
                          progress=not quiet)
    _print_results(result["results"], k)
    payload = {key: value for key, value in result.items() if key != "model"}
    metrics = json.dumps({**payload, "k": k}, indent=2, default=str).encode()
    if out is not None:
        result["model"].embeddings.item_table = table
        save_model(result["model"], out, config)
        atomic_write_bytes(out / "evaluation.json", metrics)
    if report is not None:
        atomic_write_bytes(report, metrics)


def _print_results(results: dict, k: int) -> None:
    for task, methods in results.items():
        table = Table(title=f"{task}: full ranking, test split")
        for column in ("method", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "queries", "train s"):
            table.add_column(column)
        for name, m in methods.items():
            table.add_row(name, f"{m[f'HR@{k}']:.4f}", f"{m[f'NDCG@{k}']:.4f}",
                          f"{m[f'MRR@{k}']:.4f}", str(m["queries"]), f"{m['train_seconds']:.1f}")
        Console().print(table)


@app.command()
def demo(
    events: Annotated[int, typer.Option("--events", help="Synthetic events to generate.")] =
        60_000,
    items: Annotated[int, typer.Option("--items", help="Synthetic items.")] = 1_000,
    out: Annotated[Path, typer.Option("--out", help="Where to leave the data and bundle.")] =
        Path("itemvec-demo"),
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Generate a synthetic shop log, train, evaluate against popularity, show neighbours."""
    configure_logging(quiet)
    run_demo(n_events=events, n_items=items, out=out, seed=seed, progress=not quiet)


@app.command()
def synth(
    events: Annotated[int, typer.Option("--events", help="Number of events.")],
    items: Annotated[int, typer.Option("--items", help="Number of items.")],
    out: Annotated[Path, typer.Option("--out", help="Event log to write (format by extension); "
                                      "the item table goes beside it as NAME_items.EXT.")],
    categories: Annotated[int, typer.Option("--categories", help="Hidden categories.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write a realistic synthetic log: session_id, item_id, ts, event (+ item table)."""
    if events < 2 or items < 2 or categories < 1 or categories > items:
        raise ItemvecError("synth needs --events >= 2, --items >= 2, 1 <= --categories <= --items")
    if events > 5_000_000 and out.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv"):
        # chunked: 100M events never sit in memory

        events_path, items_path = write_streamed(out, events, items, categories, seed=seed)
    else:
        events_path, items_path = write(generate(events, items, categories, seed=seed), out)
    typer.echo(f"wrote {events} events to {events_path} and {items} items to {items_path}")


# Commands of other areas live in their own modules (itemvec/cli/*.py); each defines
# ``register(app)``. Importing them here keeps this file about the core pipeline; helpers
# (options, demo) define no ``register``.
def _register_extensions() -> None:
    for name in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        if name not in ("main", "__main__"):
            register = getattr(importlib.import_module(f"itemvec.cli.{name}"), "register", None)
            if register is not None:
                register(app)


_register_extensions()


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage-error types, abort types) of click and of the copy of click that typer vendors."""
    errors, aborts = [], []
    for name in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors += [module.ClickException] if hasattr(module, "ClickException") else []
        aborts += [module.Abort] if hasattr(module, "Abort") else []
    return tuple(errors), tuple(aborts)


# Packages of the optional extras (pyproject.toml) -> the extra that installs them.
OPTIONAL_EXTRAS = {
    "fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "matplotlib": "plot",
    "faiss": "ann", "pyspark": "spark", "tensorboard": "track", "umap": "umap",
    "gensim": "bench", "implicit": "bench", "optuna": "tune",
}


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        # Non-standalone typer returns the exit code of ``typer.Exit`` and of Ctrl-C (130).
        code = app(standalone_mode=False)
    except ItemvecError as exc:  # a config with several problems: one line each
        typer.echo("\n".join(f"error: {line}" for line in str(exc).splitlines() or [""]), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = 130
    except ModuleNotFoundError as exc:  # an optional part used without its extra
        extra = OPTIONAL_EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        typer.echo(f"error: this command needs {exc.name}, which is not installed; "
                   f"pip install 'itemvec[{extra}]'", err=True)
        sys.exit(2)
    except OSError as exc:  # unwritable --out, full disk, ...: the user's to fix, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # click usage errors and friends
        usage_errors, aborts = _click_exception_types()
        if isinstance(exc, usage_errors):
            exc.show()
            sys.exit(exc.exit_code)
        if not isinstance(exc, aborts):
            raise
        code = 130
    if code == 130:
        typer.echo("interrupted; no bundle was written", err=True)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
