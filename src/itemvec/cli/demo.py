"""``itemvec demo``: the whole product on a synthetic shop in about a minute, no data needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from itemvec.config import IngestConfig, PipelineConfig
from itemvec.data.ingest import read_events
from itemvec.data.synth import generate, write
from itemvec.train.pipeline import evaluate_log, save_model
from itemvec.util.files import atomic_write_bytes

logger = logging.getLogger(__name__)


def run_demo(n_events: int = 60_000, n_items: int = 1_000, out: Path = Path("itemvec-demo"),
             seed: int = 0, progress: bool = True) -> dict:
    console = Console()
    shop = generate(n_events, n_items, n_categories=max(2, n_items // 50), seed=seed)
    events_path, items_path = write(shop, Path(out) / "events.csv")
    console.print(f"[bold]1. generated[/] {shop.events.height} events, {n_items} items in "
                  f"{shop.items['category'].n_unique()} hidden categories -> {events_path}")
    config = PipelineConfig(ingest=IngestConfig(
        context="session_id", item="item_id", time="ts", event="event",
        event_weights={"view": 1.0, "cart": 2.0, "purchase": 3.0}))
    log = read_events(events_path, config.ingest)
    result = evaluate_log(log, config, ["popularity", "itemknn"], seed=seed, progress=progress)
    model = result["model"]
    model.embeddings.item_table = shop.items
    bundle = save_model(model, Path(out) / "bundle", config)
    payload = {key: value for key, value in result.items() if key != "model"}
    atomic_write_bytes(bundle / "evaluation.json",  # lets `itemvec report` show the metrics
                       json.dumps({**payload, "k": 20}, indent=2, default=str).encode())
    console.print(f"[bold]2. trained[/] on {result['split']['train']} sessions in "
                  f"{model.stats['train_seconds']:.1f}s; bundle -> {bundle}")
    _print_metrics(console, result["results"])
    _print_neighbours(console, model.embeddings, shop.items)
    console.print(f"next: itemvec similar {bundle} {model.embeddings.item_ids[0]}")
    return result


def _print_metrics(console: Console, results: dict) -> None:
    table = Table(title="3. held-out sessions, full ranking over all items")
    for column in ("task", "method", "HR@20", "NDCG@20", "MRR@20"):
        table.add_column(column)
    for task, methods in results.items():
        for name, m in methods.items():
            table.add_row(task, name, f"{m['HR@20']:.3f}", f"{m['NDCG@20']:.3f}",
                          f"{m['MRR@20']:.3f}")
    console.print(table)


def _print_neighbours(console: Console, embeddings, items: pl.DataFrame) -> None:
    category = dict(zip(items["item_id"].to_list(), items["category"].to_list(), strict=True))
    table = Table(title="4. nearest neighbours (hidden category in parentheses)")
    table.add_column("item")
    table.add_column("neighbours")
    table.add_column("same category")
    for item in embeddings.item_ids[[0, 5, 50, 200]]:
        ids, _ = embeddings.similar_items(str(item), n=5)
        same = sum(category[i] == category[str(item)] for i in ids)
        table.add_row(f"{item} ({category[str(item)]})",
                      ", ".join(f"{i} ({category[i]})" for i in ids), f"{same}/5")
    console.print(table)
