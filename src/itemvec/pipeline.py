"""The whole pipeline, one call per stage: read -> count -> train -> embeddings -> bundle.

    log = read_events(...)                       # ingest
    matrix = count_pairs(log, ...)               # cooccurrence
    result = Trainer(...).fit(matrix)            # sampling + encoder + objective + training
    embeddings = ItemEmbeddings(...)             # embeddings (answers queries)
    write_bundle(out, embeddings, ...)           # bundle
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.baselines import build_baseline
from itemvec.bundle import check_target, write_bundle
from itemvec.checkpoint import CheckpointManager, manager_for
from itemvec.config import PipelineConfig, QueryConfig
from itemvec.cooccurrence import apply_min_support, count_pairs, prune_rare_items
from itemvec.embeddings import ItemEmbeddings
from itemvec.errors import ConfigError, DataError
from itemvec.evaluation import (
    TASKS,
    Queries,
    build_queries,
    hit_rate,
    metrics_from_ranks,
    split_contexts,
    target_ranks,
)
from itemvec.features import FeatureConfig, SideInformation, parse_feature_option, prepare_side
from itemvec.ingest import (
    EventLog,
    as_string_ids,
    check_not_null,
    first_data_row,
    read_events,
    read_table,
    require_columns,
    restrict_vocabulary,
)
from itemvec.relations import read_relations
from itemvec.training import Callback, Trainer, TrainingResult
from itemvec.tuning import tune_query

logger = logging.getLogger(__name__)
VALIDATION_QUERIES = 3000


@dataclass
class TrainedModel:
    embeddings: ItemEmbeddings
    cooccurrence: sp.csr_matrix
    item_counts: np.ndarray
    training: TrainingResult
    stats: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # extra bundle files (features.json)


def read_item_table(path: str | Path, key: str) -> pl.DataFrame:
    """The optional item table (id + columns such as category, brand, title), keyed by string id."""
    path = Path(path)
    frame = read_table(path)
    require_columns(frame, {"--item-key": key}, path)
    ids = as_string_ids(frame, key, path)  # same id rules as the event log: 7.0 -> "7"
    first_row = first_data_row(path)
    check_not_null(ids, key, pl.Series(np.arange(first_row, first_row + frame.height)), path)
    frame = frame.drop(key).with_columns(ids.alias("item_id")).select(
        ["item_id", *[c for c in frame.columns if c != key and c != "item_id"]])
    return frame.unique("item_id", keep="first", maintain_order=True)


def holdout_by_time(log: EventLog, fraction: float, seed: int) -> tuple[EventLog, EventLog | None]:
    """Split off the newest ``fraction`` of contexts as an early-stopping slice."""
    if fraction <= 0 or log.n_contexts < 20:
        return log, None
    split = split_contexts(log, valid=0.0, test=fraction, seed=seed)
    return log.subset(np.sort(split.train)), log.subset(np.sort(split.test))


def vocabulary_map(source: EventLog, model_items: np.ndarray) -> np.ndarray:
    """For each item index of ``source``: its index in ``model_items`` or -1."""
    position = {item: i for i, item in enumerate(model_items)}
    return np.asarray([position.get(item, -1) for item in source.item_ids], dtype=np.int64)


def validation_queries(valid: EventLog | None, model_items: np.ndarray, config: PipelineConfig,
                       tasks: tuple[str, ...] = TASKS) -> dict[str, Queries] | None:
    """Queries from the held-out contexts (None when there is no slice or too few queries)."""
    if valid is None:
        return None
    mapping = vocabulary_map(valid, model_items)
    queries = {task: build_queries(valid, mapping, task, seed=config.training.seed,
                                   max_queries=VALIDATION_QUERIES) for task in tasks}
    return queries if min(len(q) for q in queries.values()) >= 10 else None


def query_settings(config: PipelineConfig, ordered: bool) -> QueryConfig:
    """Baskets have no order: their items are pooled with equal weights, not by recency."""
    return config.query if ordered else replace(config.query, recency_half_life=0.0)


def make_validator(valid: EventLog | None, model_items: np.ndarray, config: PipelineConfig):
    """Closure scoring the encoder by s2i HR@20 on held-out contexts (None without a slice)."""
    found = validation_queries(valid, model_items, config, tasks=("s2i",))
    if found is None:
        if valid is not None:
            logger.warning("validation slice has fewer than 10 queries; early stopping off")
        return None
    queries, query = found["s2i"], query_settings(config, valid.ordered)

    def validator(encoder) -> float:
        vectors, bias = encoder.export()
        scorer = ItemEmbeddings(model_items, vectors, bias, config.training.temperature, query)
        return hit_rate(scorer, queries)

    return validator


def train_on_log(log: EventLog, config: PipelineConfig, valid: EventLog | None = None,
                 item_table: pl.DataFrame | None = None, progress: bool = True,
                 callbacks: list[Callback] | tuple = (),
                 checkpoint: CheckpointManager | None = None, resume: bool = False,
                 side: SideInformation | None = None) -> TrainedModel:
    """Count, train and wrap: the core of ``itemvec train`` on an already-read log.

    ``side`` adds item features (cold items from the table join the vocabulary after the warm
    ones, embedded from features alone) and relation triples (extra targets).
    """
    started = time.perf_counter()
    if valid is None:
        log, valid = holdout_by_time(log, config.training.validation_fraction,
                                     config.training.seed)
    log = restrict_vocabulary(log, prune_rare_items(log, config.cooccurrence.min_count))
    if log.n_items < 2:
        raise DataError(f"{log.source}: fewer than 2 items left after --min-count "
                        f"{config.cooccurrence.min_count}; lower it or add data")
    matrix = count_pairs(log, config.cooccurrence)
    if matrix.nnz == 0:
        raise DataError(f"{log.source}: no two items ever share a context; nothing to learn")
    plan = None if side is None else prepare_side(side, log.item_ids, matrix, config.training)
    model_items = log.item_ids if plan is None else plan.item_ids
    behaviour_first = plan is not None and plan.behaviour_first  # cold items attached after
    trained_items = log.item_ids if behaviour_first else model_items
    validator = make_validator(valid, trained_items, config)
    result = Trainer(config.training, validator, progress=progress, callbacks=callbacks,
                     checkpoint=checkpoint, resume=resume).fit(
        matrix if plan is None else plan.targets, encoder=None if plan is None else plan.encoder)
    vectors, bias = result.encoder.export()
    stats = _stats(log, matrix, result, time.perf_counter() - started)
    if plan is not None:
        stats.update(cold_items=plan.n_cold, features=plan.spec and plan.spec.describe())
    embeddings = ItemEmbeddings(trained_items, vectors, bias, config.training.temperature,
                                query_settings(config, log.ordered),
                                metadata={"config": config.to_dict(), "stats": stats},
                                item_table=item_table)
    if config.training.tune_query:
        tune_on_validation(embeddings, valid, log.ordered, config)
    if behaviour_first:  # feature tower fitted to the frozen vectors, cold logits calibrated
        from itemvec.coldstart import attach_cold_items

        result, embeddings = attach_cold_items(plan, result, embeddings,
                                               validation_queries(valid, model_items, config,
                                                                  tasks=("s2i",)),
                                               config.training, log.item_counts())
        stats["coldstart"] = {**plan.coldstart, "calibration": {
            k: v for k, v in plan.coldstart["calibration"].items() if k != "curve"}}
    stored = apply_min_support(matrix, log, config.cooccurrence)  # privacy guard (--min-support)
    if plan is None or plan.n_cold == 0:
        return TrainedModel(embeddings, stored, log.item_counts(), result, stats,
                            {} if plan is None else plan.files())
    n = len(model_items)  # cold items: empty co-occurrence rows, zero counts
    stored = sp.csr_matrix((stored.data, stored.indices,
                            np.concatenate([stored.indptr, np.full(plan.n_cold, stored.indptr[-1])])),
                           shape=(n, n))
    counts = np.concatenate([log.item_counts(), np.zeros(plan.n_cold, dtype=np.int64)])
    return TrainedModel(embeddings, stored, counts, result, stats, plan.files())


def tune_on_validation(embeddings: ItemEmbeddings, valid: EventLog | None, ordered: bool,
                       config: PipelineConfig) -> None:
    """Set the bundle's query settings to the ones the held-out contexts prefer."""
    queries = validation_queries(valid, embeddings.item_ids, config)
    if queries is None:
        return
    embeddings.query, info = tune_query(embeddings, queries, ordered)
    embeddings.metadata["stats"]["query_tuning"] = info


def _stats(log: EventLog, matrix: sp.csr_matrix, result: TrainingResult, seconds: float) -> dict:
    return {
        "source": log.source, "events": int(log.n_events), "contexts": int(log.n_contexts),
        "items": int(log.n_items), "cooccurrence_nonzeros": int(matrix.nnz),
        "context_kind": "session" if log.ordered else "basket",
        "best_epoch": result.best_epoch, "validation_hr@20": result.best_score,
        "epochs_run": len(result.history), "history": result.history,
        "train_seconds": round(seconds, 3),
    }


def train(events: str | Path, config: PipelineConfig, out: str | Path | None = None,
          items: str | Path | None = None, item_key: str = "item_id",
          progress: bool = True, callbacks: list[Callback] | tuple = (),
          resume: bool = False, features: str | dict[str, str] | None = None,
          relations: str | Path | None = None,
          relation_weight: float | None = None, side_mode: str | None = None,
          max_warm_drop: float | None = None) -> TrainedModel:
    """``itemvec train``: read the log (and item table), train, and write the bundle.

    With ``training.checkpoint_every`` set, a resumable checkpoint is kept (``out/.checkpoint``
    unless ``training.checkpoint_dir``) and removed once the bundle is in place; ``resume``
    continues from it.
    """
    if out is not None:
        check_target(Path(out))  # fail before training, not after it
    checkpoint = manager_for(config.training, out, resume)
    log = read_events(events, config.ingest)
    table = read_item_table(items, item_key) if items is not None else None
    side = side_information(table, features, relations, relation_weight, side_mode,
                            max_warm_drop)
    model = train_on_log(log, config, item_table=table, progress=progress, callbacks=callbacks,
                         checkpoint=checkpoint, resume=resume, side=side)
    if out is not None:
        save_model(model, out, config)
    if checkpoint is not None:
        checkpoint.clear()
    return model


def side_information(table: pl.DataFrame | None, features: str | dict[str, str] | None,
                     relations: str | Path | None,
                     relation_weight: float | None,
                     side_mode: str | None = None,
                     max_warm_drop: float | None = None) -> SideInformation | None:
    """Item features are on whenever an item table is given (``features='none'`` turns them off)."""
    chosen = parse_feature_option(features) if isinstance(features, str | None) else features
    if table is None and chosen:
        raise ConfigError("--features needs an item table; pass it with --items")
    if relations is None and (table is None or chosen == {}):
        return None
    options = {"relation_weight": relation_weight, "mode": side_mode,
               "max_warm_drop": max_warm_drop}
    config = FeatureConfig(**{k: v for k, v in options.items() if v is not None})
    triples = read_relations(relations) if relations is not None else None
    return SideInformation(table, chosen, triples, config)


def save_model(model: TrainedModel, out: str | Path, config: PipelineConfig) -> Path:
    return write_bundle(out, model.embeddings, config=config.to_dict(), stats=model.stats,
                        encoder_state=model.training.encoder.state_dict(),
                        cooccurrence=model.cooccurrence, item_counts=model.item_counts,
                        extra_files=model.files or None)


# -- evaluation ----------------------------------------------------------------------------------
def evaluate_log(log: EventLog, config: PipelineConfig, baselines: list[str] | tuple = (
        "popularity", "itemknn"), k: int = 20, seed: int = 0, max_queries: int | None = None,
        progress: bool = True) -> dict:
    """Split, train on the train part (early stopping on valid), score test for every method."""
    split = split_contexts(log, seed=seed)
    train_log, valid_log, test_log = (log.subset(np.sort(part)) for part in
                                      (split.train, split.valid, split.test))
    model = train_on_log(train_log, config, valid=valid_log, progress=progress)
    model_items = model.embeddings.item_ids
    queries = {task: build_queries(test_log, vocabulary_map(test_log, model_items), task,
                                   seed=seed, max_queries=max_queries) for task in TASKS}
    scorers = {"itemvec": model.embeddings}
    seconds = {"itemvec": model.stats["train_seconds"]}
    for name in baselines:
        began = time.perf_counter()
        scorers[name] = build_baseline(name, model.cooccurrence, model.item_counts,
                                       half_life=query_settings(config, log.ordered)
                                       .recency_half_life)
        seconds[name] = round(time.perf_counter() - began, 3)
    from itemvec.report import hit_rate_by_popularity

    ranks = {task: {name: target_ranks(scorer, queries[task]) for name, scorer in scorers.items()}
             for task in TASKS}
    results = {task: {name: {**metrics_from_ranks(r, k), "train_seconds": seconds[name]}
                      for name, r in ranks[task].items()} for task in TASKS}
    by_popularity = {task: {name: hit_rate_by_popularity(r, queries[task].targets,
                                                         model.item_counts, k)
                            for name, r in ranks[task].items()} for task in TASKS}
    return {"split": {"train": len(split.train), "valid": len(split.valid),
                      "test": len(split.test), "by_time": split.by_time},
            "skipped_unknown_targets": {t: q.skipped_unknown for t, q in queries.items()},
            "results": results, "by_popularity": by_popularity, "model_stats": model.stats,
            "model": model}


__all__ = ["Queries", "TrainedModel", "evaluate_log", "train", "train_on_log"]
