"""Commands that use a trained bundle: serve, search, explain, index, classify, cluster."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from itemvec.analysis import classification, clustering
from itemvec.cli.display import labelled_json, print_results
from itemvec.cli.options import ConfigFile, Label, build_config, config_options
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.query.explain import explainer_for_bundle
from itemvec.query.index import (
    build_index,
    index_paths,
    recall_at_k,
    resolve_backend,
    save_index,
)
from itemvec.query.labels import item_labels, label_column, labelled_explanations
from itemvec.query.recommend_index import (
    RECOMMEND_INDEX_MIN_ITEMS,
    build_recommend_index,
    sampled_histories,
    save_recommend_index,
)
from itemvec.query.search import ItemSearch
from itemvec.serve.state import ModelHolder, limit_threads
from itemvec.store.bundle import read_manifest, refuse_inside_bundle, verify
from itemvec.util.errors import ItemvecError
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger("itemvec")

Bundle = Annotated[Path, typer.Argument(help="Model bundle directory.")]
IndexName = Annotated[str, typer.Option(
    "--index", help="Nearest-neighbour backend: auto (exact up to 50k items, else hnsw), exact, "
    "hnsw, ivf, or none (plain matmul).")]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def write_frame(frame, out: Path) -> None:
    """CSV or Parquet (or JSONL) by extension, written atomically (never into a bundle)."""
    refuse_inside_bundle(out)

    buffer = io.BytesIO()
    suffix = out.suffix.lower()
    if suffix == ".csv":
        frame.write_csv(buffer)
    elif suffix in (".parquet", ".pq"):
        frame.write_parquet(buffer)
    elif suffix in (".jsonl", ".ndjson"):
        frame.write_ndjson(buffer)
    else:
        raise ItemvecError(f"--out {out}: unknown extension; use .csv, .parquet or .jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())


def _print_frame(title: str, frame) -> None:

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, overflow="fold")
    for row in frame.iter_rows():
        table.add_row(*[str(v) for v in row])
    Console(width=200).print(table)


def read_api_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ItemvecError(f"--api-key-file {path}: cannot read ({exc.strerror})") from None
    if len(key) < 16:
        raise ItemvecError(f"--api-key-file {path}: key must be at least 16 characters")
    return key


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(serve)
    app.command()(search)
    app.command()(explain)
    app.command("index")(build_index_command)
    app.command()(classify)
    app.command()(cluster)


@config_options("serve.host", "serve.port", "serve.watch_interval", "serve.max_body",
                "serve.threads", "serve.workers", "serve.reload_interval")
def serve(
    bundle: Bundle,
    index: IndexName = "auto",
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file", help="File holding an API key; clients then send X-API-Key or "
        "Authorization: Bearer (all endpoints except /health).")] = None,
    models_root: Annotated[Path | None, typer.Option(
        "--models-root", help="POST /admin/reload may only load bundles under this "
        "directory.  [default: the bundle's parent]")] = None,
    allow_reload: Annotated[bool, typer.Option(
        "--allow-reload", help="Enable POST /admin/reload without an API key (with "
        "--api-key-file it is on).")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Reload when the bundle on disk is replaced.")] = False,
    cors_origin: Annotated[list[str] | None, typer.Option(
        "--cors-origin", help="Allow browser calls from this origin (repeatable). CORS is "
        "off by default.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] =
        False,
    label: Label = None,
    config_file: ConfigFile = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Serve BUNDLE over HTTP (FastAPI + uvicorn): /similar, /recommend, /search, /docs.

    SIGHUP, --watch or POST /admin/reload (with --api-key-file or --allow-reload) loads the
    bundle again and swaps it in without dropping requests.
    """
    import uvicorn

    from itemvec.serve.http import create_app
    from itemvec.serve.workers import limit_request_threads

    listen = build_config(config_file, settings or {}).serve  # --port 0: one line, exit 2
    host, port = listen.host, listen.port
    limit_threads(listen.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    key = _check_serve_options(host, port, api_key_file, allow_reload)
    check_port_free(host, port)
    workers = len(os.sched_getaffinity(0)) if listen.workers == "auto" else int(listen.workers)
    if workers > 1:
        return _serve_workers(bundle, workers, index, models_root, api_key_file, cors_origin,
                              listen, access_log, watch, label, allow_reload)
    holder = _loaded_holder(bundle, models_root, index, watch, listen.watch_interval, label)
    app = create_app(holder, api_key=key, cors_origins=cors_origin or (),
                     max_body=listen.max_body, allow_reload=allow_reload,
                     reload_interval=listen.reload_interval, threads=listen.threads)
    limit_request_threads(app)
    typer.echo(f"serving {bundle} ({len(holder.current().embeddings)} items) on "
               f"http://{host}:{port}  (docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=access_log,
                timeout_graceful_shutdown=5)


def _serve_workers(bundle: Path, workers: int, index: str, models_root: Path | None,
                   api_key_file: Path | None, cors_origin: list[str] | None, listen: Any,
                   access_log: bool, watch: bool, label: str | None,
                   allow_reload: bool) -> None:
    """Several worker processes (``itemvec.serve.workers``) sharing one memory-mapped bundle.

    The bundle's manifest and checksums are checked here first, so a bad bundle is one line
    and exit code 2 (without holding its arrays in this process).
    """
    from itemvec.serve.supervisor import WorkerSettings, exec_supervisor

    manifest = read_manifest(bundle)
    verify(bundle, manifest)
    settings = WorkerSettings(
        bundle=str(bundle.resolve()), run_dir="", workers=workers, index=index,
        models_root=str(models_root.resolve()) if models_root else None,
        api_key_file=str(api_key_file.resolve()) if api_key_file else None,
        cors_origins=list(cors_origin or ()), max_body=listen.max_body, threads=listen.threads,
        host=listen.host, port=listen.port, access_log=access_log,
        watch_interval=listen.watch_interval if watch else None, label=label,
        allow_reload=allow_reload, reload_interval=listen.reload_interval)
    missing = unstored_indexes(bundle, manifest, index)
    if missing:
        typer.echo(f"note: {bundle} stores no {' or '.join(missing)} index, so each of the "
                   f"{workers} workers builds its own at load (time and private memory each); "
                   f"store them once with `itemvec index {bundle} --backend "
                   f"{resolve_backend(index, int(manifest.get('n_items', 0)))}`", err=True)
    typer.echo(f"serving {bundle} ({manifest.get('n_items', '?')} items) on "
               f"http://{listen.host}:{listen.port} with {workers} workers  (docs: /docs)",
               err=True)
    exec_supervisor(settings)


def unstored_indexes(bundle: Path, manifest: dict, index: str) -> list[str]:
    """Which indexes every worker would build for itself: an approximate backend's, and from
    ``RECOMMEND_INDEX_MIN_ITEMS`` items the recommendation index (not for compact bundles),
    when the bundle has no stored file for them."""
    backend = resolve_backend(index, int(manifest.get("n_items", 0)))
    if backend in ("exact", "none"):
        return []
    wanted = [backend]
    if (int(manifest.get("n_items", 0)) >= RECOMMEND_INDEX_MIN_ITEMS
            and "vector_rows.npy" not in manifest.get("files", {})):
        wanted.append("recommend")
    return [name for name in wanted if not index_paths(bundle, name)[0].is_file()]


def _check_serve_options(host: str, port: int, api_key_file: Path | None,
                         allow_reload: bool = False) -> str | None:
    """The API key (or None) after checking the port; warns when serving openly off loopback."""
    if not 1 <= port <= 65535:
        raise ItemvecError(f"--port must be 1-65535, got {port}")
    key = read_api_key(api_key_file)
    if host not in LOOPBACK and key is None:
        logger.warning("serving on %s without --api-key-file: anyone who can reach this "
                       "port can query the model%s", host,
                       " and trigger reloads" if allow_reload else "")
    return key


def check_port_free(host: str, port: int) -> None:
    """One clear line (exit 2) when HOST:PORT cannot be listened on, before any banner.

    The probe binds as uvicorn does (IPv6 only for a host with a colon, SO_REUSEADDR), so a
    port in TIME_WAIT counts as free and a port another process listens on does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except socket.gaierror as exc:
        raise ItemvecError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ItemvecError(f"port {port} is in use on {host}; stop the other server or "
                               "choose another with --port") from None
        raise ItemvecError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                           "--host or --port") from None


def _loaded_holder(bundle: Path, models_root: Path | None, index: str, watch: bool,
                   interval: float, label: str | None = None):
    """A model holder with the bundle loaded, reloading on SIGHUP (and on change with watch).

    Loading before the server starts turns a bad bundle into one line and exit code 2.
    """

    holder = ModelHolder(bundle, models_root=models_root, index=index, label=label)
    holder.load()
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=holder.reload_quietly, name="itemvec-reload", daemon=True).start())
    if watch:
        holder.watch(interval)
    return holder


def search(
    bundle: Bundle,
    query: Annotated[str, typer.Argument(help="Text to look for in the item table.")],
    n: Annotated[int, typer.Option("-n", help="How many results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    label: Label = None,
) -> None:
    """Items matching a text query (item-table text), widened to their embedding neighbours."""
    if not 1 <= n <= 10_000:
        raise ItemvecError(f"-n must be between 1 and 10000, got {n}")
    embeddings = load_embeddings(bundle)
    column = label_column(embeddings, label)
    ids, scores, matches = ItemSearch(embeddings).by_text(query, n=n)
    if as_json:
        typer.echo(json.dumps(labelled_json(
            {"query": query, "items": [str(i) for i in ids],
             "scores": [round(float(s), 6) for s in scores],
             "matches": [{"item_id": i, "score": s} for i, s in matches]}, embeddings, column)))
        return
    if not len(ids):
        typer.echo(f"no item text matches {query!r}")
        return
    items = [str(i) for i in ids]
    print_results(f"search: {query}", items, scores, item_labels(embeddings, items, column),
                  column or "label")


def explain(
    bundle: Bundle,
    history: Annotated[str, typer.Option("--history", help="Comma-separated item ids, "
                                         "oldest first.")],
    item: Annotated[str | None, typer.Option(
        "--item", help="Explain this item (default: explain the top -n recommendations).")]
        = None,
    n: Annotated[int, typer.Option("-n", help="Recommendations to explain.")] = 5,
    label: Label = None,
) -> None:
    """Why items are recommended: each history item's share and co-occurrence evidence.

    A history none of whose items the model knows is an error naming them (the answer would be
    popularity, explained by nothing); unknown items beside known ones are named on stderr.
    """
    embeddings = load_embeddings(bundle)
    column = label_column(embeddings, label)
    items = [h.strip() for h in history.split(",") if h.strip()]
    unknown = [h for h in items if h not in embeddings]
    if not items:
        raise ItemvecError("--history: no item ids given; pass comma-separated ids, oldest first")
    if len(unknown) == len(items):
        raise ItemvecError(f"--history: no item the model knows ({', '.join(unknown[:10])}"
                           f"{' ...' if len(unknown) > 10 else ''}); give ids of trained items, "
                           "e.g. from itemvec search BUNDLE TEXT")
    if unknown:
        typer.echo(f"skipped {len(unknown)} unknown history items: {', '.join(unknown[:10])}",
                   err=True)
    explainer = explainer_for_bundle(embeddings, bundle)
    result = ([explainer.explain(items, item)] if item is not None
              else explainer.recommend(items, n=n))
    typer.echo(json.dumps(labelled_explanations(result, embeddings, column), indent=2))


def build_index_command(
    bundle: Bundle,
    backend: Annotated[str, typer.Option("--backend", help="hnsw or ivf.")] = "hnsw",
    queries: Annotated[int, typer.Option(
        "--queries", min=1, help="Random items (and histories) used to measure recall@10 "
        "against exact search.")] = 1000,
) -> None:
    """Build an approximate index into BUNDLE and report its recall@10 against exact; from
    50k items, the recommendation index too."""
    embeddings = load_embeddings(bundle)
    began = time.perf_counter()
    index = build_index(backend, embeddings.vectors)
    seconds = time.perf_counter() - began
    saved = save_index(index, bundle)
    rng = np.random.default_rng(0)
    sample = embeddings.vectors[rng.choice(len(embeddings), min(queries, len(embeddings)),
                                           replace=False)]
    recall = recall_at_k(index, embeddings.vectors, sample, 10)
    typer.echo(f"built {backend} over {len(embeddings)} items in {seconds:.1f}s; "
               f"recall@10 vs exact {recall:.4f} on {len(sample)} queries; "
               f"stored: {saved or 'nothing (exact)'}")
    if getattr(index, "approximate", False):
        typer.echo(_recommend_index_report(embeddings, bundle, queries))


def _recommend_index_report(embeddings: ItemEmbeddings, bundle: Path, queries: int) -> str:
    """Build and store the recommendation index (``query.recommend_index``) and measure its
    recall@10 on held-out random 5-item histories; say why when none is built."""
    if embeddings.compact:
        return "recommendations: a compact model's shared rows are scored exactly; no index"
    if len(embeddings) < RECOMMEND_INDEX_MIN_ITEMS:
        return (f"recommendations: scored exactly under {RECOMMEND_INDEX_MIN_ITEMS} items; "
                "no recommend index")
    began = time.perf_counter()
    index = build_recommend_index(embeddings.vectors, embeddings.item_bias,
                                  embeddings.temperature, embeddings.query.popularity_weight,
                                  embeddings.pool)
    seconds = time.perf_counter() - began
    saved = save_recommend_index(index, bundle)
    histories = sampled_histories(len(embeddings), seed=1, count=queries)  # not the tuning set
    recall = index.recall(embeddings.pool(histories), histories)
    return (f"built the recommend index (nprobe {index.params['nprobe']} of "
            f"{index.params['nlist']} lists + {index.params['popular']} popular items) in "
            f"{seconds:.1f}s; recall@10 vs exact {recall:.4f} on {len(histories)} random "
            f"5-item histories; stored: {saved}")


def classify(
    bundle: Bundle,
    labels: Annotated[Path, typer.Option("--labels", help="CSV/Parquet/JSONL with item ids "
                                         "and labels for some items.")],
    out: Annotated[Path, typer.Option("--out", help="Predictions for every item: .csv or "
                                      ".parquet (item_id, label, confidence, source).")],
    item_key: Annotated[str, typer.Option("--item-key", help="Item id column.")] =
        "item_id",
    label_column: Annotated[str, typer.Option("--label-column", help="Label column.")] =
        "label",
    c: Annotated[float, typer.Option("-C", help="Inverse regularisation strength.")] = 1.0,
) -> None:
    """Train a logistic-regression probe on labelled items and predict the rest."""

    if c <= 0:
        raise ItemvecError(f"-C must be > 0, got {c}")
    embeddings = load_embeddings(bundle)
    frame, report = classification.classify(
        embeddings, classification.read_labels(labels, item_key, label_column), c=c)
    write_frame(frame, out)
    accuracy = (f"held-out accuracy {report['cv_accuracy']:.3f} ({report['cv_folds']}-fold) "
                if "cv_accuracy" in report else "")
    typer.echo(f"{report['labelled']} labelled items, {report['classes']} classes; "
               f"{accuracy}vs majority {report['majority_baseline']:.3f}; predicted "
               f"{report['predicted']} items -> {out}"
               + (f"; {report['unknown_ids']} label ids not in the model"
                  if report["unknown_ids"] else ""))


def cluster(
    bundle: Bundle,
    k: Annotated[int, typer.Option("-k", help="Number of clusters.")],
    out: Annotated[Path, typer.Option("--out", help="Cluster of every item: .csv or "
                                      ".parquet; the summary goes beside it as "
                                      "NAME_summary.EXT.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    top: Annotated[int, typer.Option("--top", help="Items listed per cluster.")] = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the "
                                        "summary.")] = False,
) -> None:
    """k-means on the embeddings; writes cluster ids and a readable per-cluster summary."""

    if out.suffix.lower() not in (".csv", ".parquet", ".pq", ".jsonl", ".ndjson"):
        raise ItemvecError(f"--out {out}: unknown extension; use .csv or .parquet")
    embeddings = load_embeddings(bundle)
    assignments, summary = clustering.cluster(embeddings, k, seed=seed, top=top)
    summary_path = out.with_name(f"{out.stem}_summary{out.suffix}")
    write_frame(assignments, out)
    write_frame(summary, summary_path)
    if not quiet:
        _print_frame(f"{k} clusters of {len(embeddings)} items", summary)
    typer.echo(f"wrote cluster ids to {out} and the summary to {summary_path}")
