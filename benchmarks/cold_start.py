"""Cold-start benchmark: side information for items never seen in behaviour.

Protocol (per data set):

1. Split contexts 80/10/10 (by time where the data has a clock, else seeded random).
2. Hide a random 10% of the items (seeded) from training and validation behaviour; they stay in
   the item table, so a model with side information knows them as *cold* items.
3. Train four models on the same behaviour: ``behaviour`` (itemvec default, no item table),
   ``side`` (all feature columns, the default behaviour-first mode: itemvec.train.coldstart),
   ``joint`` (all feature columns, ``features.mode = "joint"``: EGES-style fusion trained with
   behaviour) and ``side-no-probe`` (behaviour-first on the feature columns that do not reveal
   the probe label, where such a set exists).
4. Score test queries, ranking ALL items of each model (history excluded):
   - cold targets: the target is a hidden item; hidden items are removed from histories;
   - warm targets: the target is a trained item; hidden items are removed from histories.
   Compared with a category-popularity baseline (history's category mix, then popularity inside
   the category, cold items at their category's mean log-popularity) and features-only scorers
   (a side model's feature path for every item, no id embeddings: the behaviour-first tower,
   and the joint model's).
5. Category probe (logistic regression accuracy) and k-means NMI on the warm items' vectors
   (behaviour-first warm vectors are the behaviour model's), and the share of each cold item's
   10 nearest warm items that carry its label.
6. Trade-off on test: warm and cold HR@20 of the default model if its calibrated cold offset
   moved by each ``itemvec.train.coldstart.OFFSETS`` value (how much cold quality a looser warm
   budget would buy), beside the validation curve the offset was chosen on.

    python benchmarks/cold_start.py --datasets all --device cpu --threads 2 \
        --out benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import datasets as adapters  # noqa: E402
from benchmarks.probes import probe  # noqa: E402
from itemvec.config import FeatureConfig, IngestConfig, PipelineConfig  # noqa: E402
from itemvec.data.ingest import EventLog, restrict_vocabulary  # noqa: E402
from itemvec.evaluation.protocol import Queries, build_queries, evaluate, split_contexts  # noqa: E402
from itemvec.model.features import SideInformation  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.query.pooling import recency_weights
from itemvec.train.pipeline import train_on_log  # noqa: E402

logger = logging.getLogger("cold_start")
DATA = adapters.DEFAULT_DATA_DIR
K = 20


@dataclass
class SideData:
    """A log, its item table (feature columns) and how to probe and baseline it."""

    name: str
    log: EventLog
    items: pl.DataFrame  # item_id + feature columns
    category: str  # column the category-popularity baseline groups by (may be multi-valued)
    probe_labels: dict[str, str]  # item -> label for the probe / NMI
    probe_name: str
    no_probe: dict[str, str] | None  # feature choice that does not reveal the probe label
    note: str = ""
    features: dict[str, str] | None = None  # feature choice of the "side" model (None = auto)
    extra: dict = field(default_factory=dict)


# -- item tables -----------------------------------------------------------------------------------
def load_side(name: str, data_dir: Path = DATA) -> SideData:
    if name == "synth":
        return _synth()
    base = adapters.load(name, data_dir)
    root = Path(data_dir) / name
    return LOADERS[name](base, root)


def _synth() -> SideData:
    from itemvec.data.ingest import ROW, build_log
    from itemvec.data.synth import generate

    shop = generate(60_000, 1_000, 25, seed=0)
    ev = shop.events
    table = pl.DataFrame({"context": ev["session_id"], "item": ev["item_id"],
                          ROW: np.arange(ev.height), "time": ev["ts"],
                          "weight": np.ones(ev.height, np.float32)})
    log = build_log(table, IngestConfig(time="ts"), "synth")
    labels = dict(zip(shop.items["item_id"], shop.items["category"], strict=True))
    return SideData("synth", log, shop.items, "category", labels, "category",
                    {"brand": "cat", "price": "num"}, "itemvec.data.synth.generate(60000, 1000, 25)")


def _groceries(base, root: Path) -> SideData:
    items = pl.read_csv(root / "groceries_items.csv", infer_schema=False)
    items = items.with_columns(pl.col("item").alias("item_id"), pl.col("item").alias("name"))
    items = items.select("item_id", "level2", "level1", "name")
    return SideData("groceries", base.log, items, "level2", base.categories["level1"], "level1",
                    {"name": "text"}, "features level2, level1 (cat), name (text)",
                    {"level2": "cat", "level1": "cat", "name": "text"})


def _instacart(base, root: Path) -> SideData:
    products = pl.read_csv(root / "products.csv", infer_schema=False)
    aisles = pl.read_csv(root / "aisles.csv", infer_schema=False)
    departments = pl.read_csv(root / "departments.csv", infer_schema=False)
    items = (products.join(aisles, on="aisle_id", how="left")
             .join(departments, on="department_id", how="left"))
    items = items.select(pl.col("product_id").alias("item_id"), "aisle", "department",
                         "product_name")
    in_log = set(base.log.item_ids.tolist())
    items = items.filter(pl.col("item_id").is_in(list(in_log)))
    return SideData("instacart-sample", base.log, items, "aisle",
                    base.categories["department"], "department", {"product_name": "text"},
                    "features aisle, department (cat), product_name (text)",
                    {"aisle": "cat", "department": "cat", "product_name": "text"})


def _movielens(base, root: Path) -> SideData:
    genres = [line.split("|")[0] for line in
              (root / "u.genre").read_text(encoding="latin-1").splitlines() if line.strip()]
    rows = []
    for line in (root / "u.item").read_text(encoding="latin-1").splitlines():
        f = line.split("|")
        if len(f) < 5 + len(genres):
            continue
        hits = [g for g, flag in zip(genres, f[5:5 + len(genres)], strict=True) if flag == "1"]
        title = f[1]
        year = title[-5:-1] if title.endswith(")") and title[-5:-1].isdigit() else None
        rows.append({"item_id": f[0], "genres": "|".join(hits), "title": title[:-7] if year
                     else title, "year": year})
    items = pl.DataFrame(rows)
    return SideData("movielens-100k", base.log, items, "genres", base.categories["first_genre"],
                    "first_genre", {"title": "text", "year": "num"},
                    "features genres (multi-valued cat), title (text), year (num)",
                    {"genres": "cat", "title": "text", "year": "num"})


def _amazon(base, root: Path) -> SideData:
    attributes = json.loads((root / "Beauty_item2attributes.json").read_text())
    labels = base.categories["top_attribute"]
    probe_values = set(labels.values())
    items = pl.DataFrame({
        "item_id": list(attributes),
        "attributes": ["|".join(str(a) for a in v) for v in attributes.values()],
        # the same attributes without any value used as a probe label
        "attributes_no_probe": ["|".join(str(a) for a in v if str(a) not in probe_values)
                                for v in attributes.values()],
    })
    return SideData("amazon-beauty", base.log, items, "attributes", labels, "top_attribute",
                    {"attributes_no_probe": "cat"},
                    "features: attribute ids (brand + category path, multi-valued cat)",
                    {"attributes": "cat"})


def _diginetica(base, root: Path) -> SideData:
    categories = pl.read_csv(root / "product-categories.csv", separator=";", infer_schema=False)
    items = categories.select(pl.col("itemId").alias("item_id"),
                              pl.col("categoryId").alias("category"))
    in_log = set(base.log.item_ids.tolist())
    items = items.filter(pl.col("item_id").is_in(list(in_log)))
    return SideData("diginetica", base.log, items, "category", base.categories["category"],
                    "category", None, "features: category id (cat), the only side field",
                    {"category": "cat"})


LOADERS = {"groceries": _groceries, "instacart-sample": _instacart, "movielens-100k": _movielens,
           "amazon-beauty": _amazon, "diginetica": _diginetica}
ALL = ("synth", *LOADERS)


# -- scorers --------------------------------------------------------------------------------------
class CategoryPopularity:
    """History's (recency-weighted) category mix, then popularity inside a category.

    Cold items have no popularity: they take their category's mean log-popularity.
    """

    def __init__(self, item_ids: np.ndarray, n_warm: int, counts: np.ndarray, table: pl.DataFrame,
                 column: str, half_life: float = 3.0) -> None:
        import scipy.sparse as sp

        position = {str(i): k for k, i in enumerate(item_ids)}
        rows, cols, vocab = [], [], {}
        for item, cell in zip(table["item_id"].to_list(), table[column].to_list(), strict=True):
            if item in position and cell:
                for value in str(cell).split("|"):
                    rows.append(position[item])
                    cols.append(vocab.setdefault(value, len(vocab)))
        member = sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                               shape=(len(item_ids), max(len(vocab), 1)))
        member.data = member.data / np.repeat(np.maximum(np.diff(member.indptr), 1),
                                              np.diff(member.indptr))
        self.member = member.tocsr()
        log_pop = np.zeros(len(item_ids))
        log_pop[:n_warm] = np.log1p(counts[:n_warm])
        mass = np.asarray(self.member[:n_warm].sum(axis=0)).ravel()
        category_mean = (self.member[:n_warm].T @ log_pop[:n_warm]) / np.maximum(mass, 1e-12)
        cold = self.member[n_warm:]
        fallback = log_pop[:n_warm].mean()
        has = np.asarray(cold.sum(axis=1)).ravel() > 0
        log_pop[n_warm:] = np.where(has, cold @ category_mean / np.maximum(
            np.asarray(cold.sum(axis=1)).ravel(), 1e-12), fallback)
        self.tiebreak = 1e-3 * log_pop / max(log_pop.max(), 1e-12)
        self.half_life = half_life

    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(histories), self.member.shape[0]))
        for row, items in enumerate(histories):
            w = recency_weights(len(items), self.half_life)
            profile = np.asarray(self.member[items].T @ (w / w.sum())).ravel()
            out[row] = self.member @ profile
        return out + self.tiebreak[None, :]


def features_only(model, temperature: float, query) -> ItemEmbeddings:
    """The side model's feature path for every item (no id embeddings): a features-only model."""
    encoder = model.training.encoder.eval()
    with torch.no_grad():
        index = torch.arange(encoder.n_total, device=encoder.item_embedding.weight.device)
        vectors = torch.cat([encoder.feature_vectors(index[i:i + 4096])
                             for i in range(0, len(index), 4096)])
        bias = encoder.cold_logits(vectors)
    return ItemEmbeddings(model.embeddings.item_ids, vectors.cpu().numpy(), bias.cpu().numpy(),
                          temperature, query)


# -- protocol ------------------------------------------------------------------------------------
def hide_items(log: EventLog, fraction: float, seed: int, table: pl.DataFrame) -> np.ndarray:
    """A random ``fraction`` of the log's items that also have a row in the item table."""
    known = np.isin(log.item_ids, table["item_id"].to_numpy())
    candidates = np.flatnonzero(known)
    rng = np.random.default_rng(seed)
    n = int(round(fraction * log.n_items))
    hidden = np.zeros(log.n_items, dtype=bool)
    hidden[rng.choice(candidates, size=min(n, len(candidates)), replace=False)] = True
    return hidden


def query_sets(test: EventLog, hidden_ids: set[str], item_ids: np.ndarray, n_warm: int,
               seed: int, max_queries: int) -> dict[str, Queries]:
    """s2i queries over the side model's vocabulary: warm targets and cold targets."""
    position = {str(i): k for k, i in enumerate(item_ids)}
    to_model = np.asarray([position.get(str(i), -1) for i in test.item_ids], dtype=np.int64)
    queries = build_queries(test, to_model, "s2i", seed=seed)
    out = {}
    for kind in ("warm", "cold"):
        hist, targ = [], []
        for h, t in zip(queries.histories, queries.targets, strict=True):
            if (t >= n_warm) != (kind == "cold") or (t >= n_warm and
                                                     str(item_ids[t]) not in hidden_ids):
                continue
            h = h[h < n_warm]  # hidden items are removed from every history
            if len(h):
                hist.append(h)
                targ.append(t)
        q = Queries(hist, np.asarray(targ, dtype=np.int64))
        if len(q) > max_queries:
            keep = np.sort(np.random.default_rng(seed).choice(len(q), max_queries, replace=False))
            q = Queries([q.histories[i] for i in keep], q.targets[keep])
        out[kind] = q
    return out


@dataclass
class HiddenSplit:
    """The protocol's split: 10% of items hidden from train and valid, kept in test."""

    train: EventLog
    valid: EventLog
    test: EventLog
    hidden_ids: set[str]


def hidden_split(data: SideData, seed: int) -> HiddenSplit:
    log = data.log
    split = split_contexts(log, seed=seed)
    hidden = hide_items(log, 0.10, seed, data.items)
    train, valid, test = (log.subset(np.sort(part)) for part in
                          (split.train, split.valid, split.test))
    return HiddenSplit(restrict_vocabulary(train, ~hidden), restrict_vocabulary(valid, ~hidden),
                       test, set(log.item_ids[hidden].tolist()))


def run_dataset(name: str, seed: int, epochs: int | None, max_queries: int,
                device: str, data_dir: Path = DATA) -> dict:
    data = load_side(name, data_dir)
    log = data.log
    logger.info("%s: %d items, %d contexts", name, log.n_items, log.n_contexts)
    parts = hidden_split(data, seed)
    train_log, valid_log, test_log, hidden_ids = parts.train, parts.valid, parts.test, \
        parts.hidden_ids
    config = PipelineConfig()
    config.training.device = device
    if epochs:
        config.training.epochs = epochs
    table = data.items.filter(pl.col("item_id").is_in(log.item_ids.tolist()))
    result = {"dataset": name, "note": data.note, "items": int(log.n_items),
              "hidden_items": len(hidden_ids), "contexts": int(log.n_contexts),
              "item_table_rows": int(table.height), "probe": data.probe_name}
    models, seconds = {}, {}
    # side = the default (behaviour-first); joint = the EGES-style mode trained with behaviour
    variants = {"behaviour": None, "side": data.features or {}, "joint": data.features or {}}
    if data.no_probe is not None:
        variants["side-no-probe"] = data.no_probe
    for variant, chosen in variants.items():
        began = time.perf_counter()
        mode = "joint" if variant == "joint" else "behaviour-first"
        side = None if chosen is None else SideInformation(table, chosen or None,
                                                           config=FeatureConfig(mode=mode))
        models[variant] = train_on_log(train_log, config, valid=valid_log, item_table=table,
                                       side=side, progress=False)
        seconds[variant] = round(time.perf_counter() - began, 1)
        logger.info("%s/%s trained in %.1fs: %s", name, variant, seconds[variant],
                    models[variant].stats.get("features"))
    side_model = models["side"]
    item_ids = side_model.embeddings.item_ids
    n_warm = len(models["behaviour"].embeddings)
    assert list(item_ids[:n_warm]) == list(models["behaviour"].embeddings.item_ids)
    queries = query_sets(test_log, hidden_ids, item_ids, n_warm, seed, max_queries)
    counts = side_model.item_counts
    scorers = {
        "behaviour": models["behaviour"].embeddings,
        "category-popularity": CategoryPopularity(item_ids, n_warm, counts, table, data.category,
                                                  config.query.recency_half_life),
        "features-only": features_only(side_model, config.training.temperature, config.query),
        "features-only-joint": features_only(models["joint"], config.training.temperature,
                                             config.query),
        **{v: models[v].embeddings for v in variants if v != "behaviour"},
    }
    result["seconds"] = seconds
    result["features"] = {v: m.stats.get("features") for v, m in models.items()}
    result["coldstart"] = {v: m.stats.get("coldstart") for v, m in models.items()
                           if m.stats.get("coldstart")}
    result["queries"] = {k: len(q) for k, q in queries.items()}
    result["ranking"] = {}
    for kind, q in queries.items():
        result["ranking"][kind] = {}
        for method, scorer in scorers.items():
            if method == "behaviour" and kind == "cold":
                continue  # it has never heard of the hidden items
            result["ranking"][kind][method] = evaluate(scorer, q, K) if len(q) else None
    result["tradeoff"] = tradeoff(scorers["side"], queries, n_warm)
    result["validation_curve"] = json.loads(side_model.files["features.json"])["coldstart"][
        "calibration"].get("curve")
    warm_ids = item_ids[:n_warm]
    result["probe_results"] = {
        method: probe(scorers[method].vectors[:n_warm], warm_ids, data.probe_labels, seed=seed,
                      quick=True)
        for method in ("behaviour", *[v for v in variants if v not in ("behaviour", "side",
                                                                      "side-no-probe")],
                       "features-only", "features-only-joint")}
    cold = np.arange(n_warm, len(item_ids))  # warm vectors of side / side-no-probe = behaviour's
    if len(cold) >= 10:
        result["cold_probe"] = {v: _cold_neighbours(scorers[v], cold, data.probe_labels)
                                for v in variants if v != "behaviour"}
    return result


def tradeoff(model: ItemEmbeddings, queries: dict[str, Queries], n_warm: int) -> dict:
    """Test HR@20 of warm and of cold targets if the calibrated cold offset moved by each
    ``coldstart.OFFSETS`` value (0 = as shipped), and warm HR@20 with no cold item ranked."""
    from itemvec.train.coldstart import OFFSETS, offset_hits

    pooled = Queries([*queries["warm"].histories, *queries["cold"].histories],
                     np.concatenate([queries["warm"].targets, queries["cold"].targets]))
    cold = np.arange(len(model)) >= n_warm
    warm_hits, cold_hits, base = offset_hits(model, pooled, cold, model.query.popularity_weight)
    n_warm_q, n_cold_q = max(len(queries["warm"]), 1), max(len(queries["cold"]), 1)
    return {"warm_without_cold": base / n_warm_q,
            "curve": {f"{o:g}": [round(w / n_warm_q, 4), round(c / n_cold_q, 4)]
                      for o, w, c in zip(OFFSETS, warm_hits, cold_hits, strict=True)}}


def _cold_neighbours(embeddings: ItemEmbeddings, cold: np.ndarray, labels: dict) -> dict:
    """Share of each cold item's 10 nearest warm neighbours that carry its probe label."""
    n_warm = cold.min()
    share = []
    for i in cold:
        label = labels.get(str(embeddings.item_ids[i]))
        if label is None:
            continue
        scores = embeddings.vectors[:n_warm] @ embeddings.vectors[i]
        top = np.argsort(-scores)[:10]
        share.append(np.mean([labels.get(str(embeddings.item_ids[j])) == label for j in top]))
    return {"items": len(share), "same_label@10": float(np.mean(share)) if share else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="all", help=f"comma list of {', '.join(ALL)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_start.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    names = ALL if args.datasets == "all" else [n.strip() for n in args.datasets.split(",")]
    results = []
    for name in names:
        began = time.perf_counter()
        results.append(run_dataset(name, args.seed, args.epochs, args.max_queries, args.device,
                                   args.data_dir))
        results[-1]["total_seconds"] = round(time.perf_counter() - began, 1)
        print(json.dumps(results[-1], indent=1, default=str), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
