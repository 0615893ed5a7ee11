"""A whole catalogue as the item table: ``similar`` (i2i) quality of warm and cold targets.

Protocol (per data set):

1. Split contexts 80/10/10 by time (``benchmarks.cold_start.hidden_split``); a random 10% of the
   items seen in behaviour are hidden from train and valid (kept in the item table): the cold
   targets.
2. Train ``behaviour`` (itemvec default, no item table) and ``catalogue`` (the same plus the
   WHOLE catalogue as ``--items``: every row, most never in any event; default
   behaviour-first mode, so ``similar``'s cold offset is chosen on validation i2i pairs).
3. i2i test queries (last item -> next item, ``build_queries(..., "i2i")``) whose query item the
   behaviour model knows. Warm queries: the target was trained on. Cold queries: the target is
   a hidden item. Each model answers with ``similar_items_batch(n=20)`` (the query item never
   returned): ``behaviour``; ``catalogue`` with ``cold=calibrated`` (the default), ``include``
   and ``exclude``. ``category-popularity``: items of the query item's category by training
   popularity, a cold item at its category's mean log-popularity (ties split evenly).
4. Also: the mean share of cold items in the top 20, the chosen offset, training seconds,
   bundle size.

    python benchmarks/cold_catalogue.py --datasets diginetica,synth20 \\
        --out benchmarks/results/cold_catalogue.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import datasets as adapters  # noqa: E402
from benchmarks.cold_start import SideData, hidden_split  # noqa: E402
from itemvec.config import IngestConfig, PipelineConfig  # noqa: E402
from itemvec.data.frames import events_from_frame  # noqa: E402
from itemvec.data.ingest import EventLog  # noqa: E402
from itemvec.data.synth import generate  # noqa: E402
from itemvec.evaluation.protocol import build_queries  # noqa: E402
from itemvec.model.features import SideInformation  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.train.pipeline import save_model, train_on_log  # noqa: E402

logger = logging.getLogger("cold_catalogue")
K = 20
MODES = ("calibrated", "include", "exclude")


def diginetica(data_dir: Path) -> SideData:
    """Diginetica views with the WHOLE product-categories.csv as the item table."""
    base = adapters.load("diginetica", data_dir)
    table = pl.read_csv(Path(data_dir) / "diginetica" / "product-categories.csv", separator=";",
                        infer_schema=False)
    items = table.select(pl.col("itemId").alias("item_id"), pl.col("categoryId").alias("category"))
    return SideData("diginetica", base.log, items, "category", {}, "category", None,
                    "whole product-categories.csv as --items", {"category": "cat"})


def synth20(events: int = 300_000, active: int = 5_000, categories: int = 50,
            factor: int = 20) -> SideData:
    """A planted shop whose catalogue is ``factor`` x its active items: each extra (never seen)
    item copies a random active item's category, brand and price."""
    shop = generate(events, active, categories, seed=0)
    log = events_from_frame(shop.events, IngestConfig(context="session_id", item="item_id",
                                                      time="ts"), "synth20")
    warm = shop.items.select("item_id", "category", "brand", "price")
    extra = warm.sample(active * (factor - 1), with_replacement=True, seed=1).with_columns(
        pl.format("x{}", pl.int_range(pl.len())).alias("item_id"))
    return SideData("synth20", log, pl.concat([warm, extra]), "category", {}, "category", None,
                    f"generate({events}, {active}, {categories}) + {factor}x catalogue",
                    {"category": "cat", "brand": "cat", "price": "num"})


LOADERS = {"diginetica": diginetica, "synth20": lambda _dir: synth20()}


def i2i_pairs(test: EventLog, known: set[str], hidden: set[str], max_queries: int,
              seed: int) -> dict[str, list[tuple[str, str]]]:
    """(query item, target) id pairs of the test slice: warm targets and hidden (cold) ones."""
    ids = test.item_ids.astype(str)
    queries = build_queries(test, np.arange(len(ids)), "i2i", seed=seed)
    out: dict[str, list[tuple[str, str]]] = {"warm": [], "cold": []}
    for history, target in zip(queries.histories, queries.targets, strict=True):
        q, t = ids[history[-1]], ids[target]
        if q not in known:
            continue
        if t in known:
            out["warm"].append((q, t))
        elif t in hidden:
            out["cold"].append((q, t))
    rng = np.random.default_rng(seed)
    for kind, pairs in out.items():
        if len(pairs) > max_queries:
            out[kind] = [pairs[i] for i in np.sort(rng.choice(len(pairs), max_queries, False))]
    return out


def similar_hits(emb: ItemEmbeddings, pairs: list[tuple[str, str]], cold: str
                 ) -> tuple[np.ndarray, float]:
    """Hit@20 per pair and the mean share of cold items in the top 20."""
    hits, shares = [], []
    for start in range(0, len(pairs), 128):
        chunk = pairs[start:start + 128]
        result = emb.similar_items_batch([q for q, _ in chunk], n=K, cold=cold)
        hits += [t in row for (_, t), row in zip(chunk, result.ids.tolist(), strict=True)]
        shares += result.cold.mean(axis=1).tolist()
    return np.asarray(hits), float(np.mean(shares)) if shares else 0.0


def category_popularity_hits(emb: ItemEmbeddings, counts: np.ndarray, table: pl.DataFrame,
                             column: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Hit@20 of the query item's category ranked by popularity (cold: category mean)."""
    category = dict(zip(table["item_id"].to_list(), table[column].to_list(), strict=True))
    codes = {c: k for k, c in enumerate(sorted({str(v) for v in category.values()}))}
    cat = np.asarray([codes.get(str(category.get(i)), -1) for i in emb.item_ids], np.int64)
    logpop = np.log1p(np.asarray(counts, np.float64))
    warm = np.arange(len(emb)) < emb.n_warm
    sums = np.bincount(np.maximum(cat[warm], 0), logpop[warm], minlength=len(codes) + 1)
    sizes = np.bincount(np.maximum(cat[warm], 0), minlength=len(codes) + 1)
    means = np.divide(sums, np.maximum(sizes, 1))
    logpop = np.where(warm, logpop, means[np.maximum(cat, 0)])
    hits = []
    for q, t in pairs:
        qi, ti = emb.row(q), emb.row(t)
        score = np.where(cat == cat[qi], 1e6, 0.0) + logpop
        score[qi] = -np.inf
        above, ties = (score > score[ti]).sum(), (score == score[ti]).sum() - 1
        hits.append(above + ties / 2 < K)
    return np.asarray(hits)


def twin_counts(emb: ItemEmbeddings, targets: list[str]) -> dict:
    """How many other items have exactly each cold target's vector (the same feature row): a
    cosine ranking cannot put a target above its twins, only break the tie."""
    rows = emb.vector_rows if emb.vector_rows is not None else np.unique(
        emb.vectors, axis=0, return_inverse=True)[1].ravel()
    sizes = np.bincount(rows)
    twins = np.asarray([sizes[rows[emb.row(t)]] - 1 for t in targets])
    return {"median": float(np.median(twins)), "min": int(twins.min()),
            "share_over_19": round(float((twins > 19).mean()), 3)}


def run(name: str, data_dir: Path, max_queries: int, seed: int) -> dict:
    data = LOADERS[name](data_dir)
    parts = hidden_split(data, seed)
    config = PipelineConfig()
    config.training.device = "cpu"
    result: dict = {"dataset": name, "note": data.note, "item_table_rows": data.items.height,
                    "hidden_items": len(parts.hidden_ids)}
    models, seconds = {}, {}
    for variant in ("behaviour", "catalogue"):
        side = SideInformation(data.items, data.features) if variant == "catalogue" else None
        began = time.perf_counter()
        models[variant] = train_on_log(parts.train, config, valid=parts.valid,
                                       item_table=data.items if side else None, side=side,
                                       progress=False)
        seconds[variant] = round(time.perf_counter() - began, 1)
        logger.info("%s/%s: %d items in %.1fs", name, variant, len(models[variant].embeddings),
                    seconds[variant])
    catalogue = models["catalogue"]
    emb = catalogue.embeddings
    result.update(seconds=seconds, items=len(emb), warm_items=emb.n_warm,
                  cold_items=len(emb) - emb.n_warm,
                  similar_offset=emb.query.cold_similarity_offset,
                  similar_calibration=catalogue.coldstart.get("similar_calibration"))
    with tempfile.TemporaryDirectory() as tmp:
        for variant, model in models.items():
            began = time.perf_counter()
            path = save_model(model, Path(tmp) / variant, config)
            result.setdefault("bundle_mb", {})[variant] = round(
                sum(p.stat().st_size for p in path.iterdir()) / 2**20, 1)
            result.setdefault("save_seconds", {})[variant] = round(time.perf_counter() - began, 1)
            shutil.rmtree(path)
    known = set(models["behaviour"].embeddings.item_ids.tolist())
    pairs = i2i_pairs(parts.test, known, parts.hidden_ids, max_queries, seed)
    table: dict[str, dict] = {}
    for kind, chosen in pairs.items():
        row: dict = {"queries": len(chosen)}
        if kind == "warm":
            hits, _ = similar_hits(models["behaviour"].embeddings, chosen, "include")
            row["behaviour"] = float(hits.mean()) if len(hits) else None
        for mode in MODES:
            hits, share = similar_hits(emb, chosen, mode)
            row[f"catalogue-{mode}"] = float(hits.mean()) if len(hits) else None
            row[f"cold_share-{mode}"] = round(share, 4)
        hits = category_popularity_hits(emb, catalogue.item_counts, data.items, data.category,
                                        chosen)
        row["category-popularity"] = float(hits.mean()) if len(hits) else None
        if kind == "cold" and len(chosen):
            row["target_twins"] = twin_counts(emb, [t for _, t in chosen])
        table[kind] = row
        logger.info("%s %s: %s", name, kind, row)
    result["i2i_hr@20"] = table
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="diginetica,synth20")
    parser.add_argument("--data-dir", type=Path, default=adapters.DEFAULT_DATA_DIR)
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_catalogue.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = [run(name, args.data_dir, args.max_queries, args.seed)
               for name in args.datasets.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
