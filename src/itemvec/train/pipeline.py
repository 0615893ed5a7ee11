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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.config import FeatureConfig, PipelineConfig, QueryConfig, TrainingConfig
from itemvec.counting.cooccurrence import apply_min_support, count_pairs, prune_rare_items
from itemvec.counting.streamed import count_file
from itemvec.data.batches import DEFAULT_CHUNK_ROWS
from itemvec.data.frames import items_from_frame
from itemvec.data.ingest import (
    DEFAULT_READING,
    EventLog,
    Reading,
    first_data_row,
    is_ordered,
    read_events,
    read_table,
    restrict_vocabulary,
)
from itemvec.data.relations import read_relations
from itemvec.data.streaming import (
    VALIDATION_CONTEXTS,
    hold_out,
    read_contexts,
    resolve_kind,
    sample_valid,
    use_streaming,
)
from itemvec.evaluation.baselines import Contexts, build_baseline, check_baselines
from itemvec.evaluation.protocol import (
    TASKS,
    Queries,
    build_queries,
    hit_rate,
    hit_rate_by_popularity,
    metrics_from_ranks,
    split_contexts,
    target_ranks,
)
from itemvec.evaluation.query_tuning import tune_query
from itemvec.model.features import SideInformation, parse_feature_option, prepare_side
from itemvec.model.objectives import resolve_objective
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.store.bundle import check_target, write_bundle
from itemvec.train.checkpoint import CheckpointManager, manager_for
from itemvec.train.coldstart import attach_cold_items
from itemvec.train.histories import build_examples, finetune, round_size
from itemvec.train.trainer import Callback, LocalContext, Trainer, TrainingResult
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)
AUTO_HISTORY_EPOCHS = 10
AUTO_HISTORY_MAX_EVENTS = 2_000_000
VALIDATION_QUERIES = 3000


@dataclass
class TrainedModel:
    embeddings: ItemEmbeddings
    cooccurrence: sp.csr_matrix
    item_counts: np.ndarray
    training: TrainingResult
    stats: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # extra bundle files (features.json)
    coldstart: dict | None = None  # behaviour-first: the full cold-start report (curves too)


def read_item_table(path: str | Path, key: str, reading: Reading = DEFAULT_READING) -> pl.DataFrame:
    """The optional item table (id + columns such as category, brand, title), keyed by string id;
    ``reading`` as ``items_reading`` gives it (separator, column names, encoding)."""
    path = Path(path)
    return items_from_frame(read_table(path, reading), key, path, "--item-key",
                            first_data_row(path, reading))


def items_reading(side: FeatureConfig) -> Reading:
    """How the item table is laid out: ``--items-sep``, ``--items-columns`` (a table without a
    header), ``--items-encoding``."""
    columns = tuple(side.items_columns) if side.items_columns else None
    return Reading(sep=side.items_sep, header=columns is None, columns=columns,
                   encoding=side.items_encoding)


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
    return config.query if ordered else config.query.replace(recency_half_life=0.0)


def make_validator(valid: EventLog | None, model_items: np.ndarray, config: PipelineConfig):
    """Closure scoring the encoder by HR@20 on held-out contexts (``training.validation_task``:
    s2i, i2i or their mean); None without a slice."""
    task = config.training.validation_task
    tasks = TASKS if task == "mean" else (task,)
    found = validation_queries(valid, model_items, config, tasks=tasks)
    if found is None:
        if valid is not None:
            logger.warning("validation slice has fewer than 10 queries; early stopping off")
        return None
    query = query_settings(config, valid.ordered)

    def validator(encoder) -> float:
        vectors, bias = encoder.export()
        scorer = ItemEmbeddings(model_items, vectors, bias, config.training.temperature, query)
        return sum(hit_rate(scorer, found[t]) for t in tasks) / len(tasks)

    return validator


@dataclass
class Counted:
    """What training needs from counting, whichever way the log was counted."""

    matrix: sp.csr_matrix  # co-occurrence of the training contexts
    item_ids: np.ndarray  # vocabulary (str), most frequent first
    item_counts: np.ndarray  # training contexts each item occurs in
    ordered: bool  # sessions (True) or baskets
    source: str
    events: int  # training events and contexts (for the bundle's stats)
    contexts: int
    stored: sp.csr_matrix | None = None  # what the bundle keeps (after --min-support); matrix
    extra_stats: dict = field(default_factory=dict)  # added to the bundle's stats
    log: EventLog | None = None  # the contexts themselves, for history fine-tuning (in memory)

    @classmethod
    def from_log(cls, log: EventLog, config: PipelineConfig) -> Counted:
        """Count ``log`` (already restricted to its vocabulary) in memory."""
        matrix = count_pairs(log, config.cooccurrence) if log.n_items >= 2 else None
        stored = None if matrix is None else apply_min_support(matrix, log, config.cooccurrence)
        return cls(matrix, log.item_ids, log.item_counts(), log.ordered, log.source,
                   log.n_events, log.n_contexts, stored, log=log,
                   extra_stats={"context_kind_decision": log.kind_decision()})


class StageClock:
    """Wall seconds per named stage (read, count, train, query tuning, ...), in run order, so
    the manifest and the printed total account for every stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0)
                                       + time.perf_counter() - began, 3)

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 3)

    def record(self, model: TrainedModel) -> TrainedModel:
        """Put every stage's seconds, and their sum, into ``model``'s stats."""
        model.stats["seconds"] = dict(self.seconds)
        model.stats["train_seconds"] = self.total
        return model


@dataclass
class Schedule:
    """What model selection chose on the held-out slice; the refit on every context replays it
    without looking at validation again."""

    epochs: int  # co-occurrence epochs (0: the spectral start was best)
    history_epochs: int  # history fine-tuning epochs kept (0: rejected or not run)
    query: QueryConfig  # query settings tuned on validation
    coldstart: dict | None = None  # behaviour-first: tower epochs, cold offset, feature prior

    @classmethod
    def of(cls, model: TrainedModel) -> Schedule:
        stats = model.stats
        report = stats.get("history_finetune") or {}
        return cls(int(model.training.best_epoch), int(report.get("best_epoch") or 0),
                   model.embeddings.query, model.coldstart)

    def describe(self) -> dict:
        return {"epochs": self.epochs, "history_epochs": self.history_epochs,
                "query": self.query.to_dict()}


def train_on_log(log: EventLog, config: PipelineConfig, valid: EventLog | None = None,
                 item_table: pl.DataFrame | None = None, progress: bool = True,
                 callbacks: list[Callback] | tuple = (),
                 checkpoint: CheckpointManager | None = None, resume: bool = False,
                 side: SideInformation | None = None,
                 clock: StageClock | None = None,
                 context: LocalContext | None = None) -> TrainedModel:
    """Count, train and wrap: the core of ``itemvec train`` on an already-read log.

    Without ``valid``, the newest ``validation_fraction`` of contexts is held out to choose
    the schedule (epochs, history fine-tuning, query settings); then, with ``training.refit``,
    the final model is trained on every context with that schedule, so items and sessions seen
    only in the newest slice are in it (``Schedule``). A given ``valid`` is never trained
    on (benchmarks, ``evaluate``). ``side`` adds item features and relation triples;
    ``context`` makes every training stage data-parallel (``itemvec.train.distributed``).
    """
    clock = clock or StageClock()
    whole = log
    held_out = valid is None
    if held_out:
        log, valid = holdout_by_time(log, config.training.validation_fraction,
                                     config.training.seed)
    selected = _train_part(log, config, valid, clock, item_table=item_table, progress=progress,
                           callbacks=callbacks, checkpoint=checkpoint, resume=resume, side=side,
                           context=context)
    if not (held_out and valid is not None and refits(config, side)):
        return clock.record(selected)
    schedule = Schedule.of(selected)
    with clock.stage("refit"):
        final = _train_part(whole, config, None, StageClock(), schedule=schedule,
                            item_table=item_table, progress=progress, callbacks=callbacks,
                            side=side, context=context)
    _record_selection(final, selected, schedule)
    return clock.record(final)


def refits(config: PipelineConfig, side: SideInformation | None) -> bool:
    """The refit on every context applies to behaviour models and behaviour-first side
    information; joint (EGES-style) training keeps the model trained on the selection part."""
    if not config.training.refit:
        return False
    return side is None or side.config.mode != "joint"


SELECTED = ("best_epoch", "validation_hr@20", "history", "query_tuning", "history_finetune",
            "query_tuning_after_histories", "coldstart")  # judged on validation: kept as chosen


def _record_selection(final: TrainedModel, selected: TrainedModel, schedule: Schedule) -> None:
    """The final model's stats say what validation chose (curves, tuning trials) and how the
    refit differed: its own contexts, events, items and epochs sit under ``refit``."""
    stats, chosen = final.stats, selected.stats
    stats["refit"] = {"schedule": schedule.describe(), "epochs_run": stats.get("epochs_run"),
                      "seconds": stats.get("seconds"),
                      "history_finetune": stats.pop("history_finetune", None),
                      "selection_contexts": chosen["contexts"],
                      "selection_events": chosen["events"], "selection_items": chosen["items"]}
    stats.update({k: chosen[k] for k in SELECTED if k in chosen})
    stats["epochs_run"] = chosen.get("epochs_run")


def _train_part(log: EventLog, config: PipelineConfig, valid: EventLog | None,
                clock: StageClock, schedule: Schedule | None = None, **options) -> TrainedModel:
    with clock.stage("count"):
        log = restrict_vocabulary(log, prune_rare_items(log, config.cooccurrence.min_count))
        counted = Counted.from_log(log, config)
    return train_on_counts(counted, config, valid, clock=clock, schedule=schedule, **options)


def train_on_counts(counted: Counted, config: PipelineConfig, valid: EventLog | None = None,
                    item_table: pl.DataFrame | None = None, progress: bool = True,
                    callbacks: list[Callback] | tuple = (),
                    checkpoint: CheckpointManager | None = None, resume: bool = False,
                    side: SideInformation | None = None, clock: StageClock | None = None,
                    schedule: Schedule | None = None,
                    context: LocalContext | None = None) -> TrainedModel:
    """Train and wrap a counted log (in memory or streamed); ``valid`` drives early stopping and
    query tuning. With a ``schedule`` (the refit), nothing is validated: the chosen epochs,
    history fine-tuning and query settings are replayed."""
    clock = clock or StageClock()
    matrix, item_ids, ordered = counted.matrix, counted.item_ids, counted.ordered
    if len(item_ids) < 2:
        raise DataError(f"{counted.source}: fewer than 2 items left after --min-count "
                        f"{config.cooccurrence.min_count}; lower it or add data")
    if matrix.nnz == 0:
        raise DataError(f"{counted.source}: no two items ever share a context; nothing to learn")
    with clock.stage("side_features"):
        plan = None if side is None else prepare_side(side, item_ids, matrix, config.training)
    model_items = item_ids if plan is None else plan.item_ids
    behaviour_first = plan is not None and plan.behaviour_first  # cold items attached after
    trained_items = item_ids if behaviour_first else model_items
    training = config.training if schedule is None \
        else config.training.replace(epochs=max(schedule.epochs, 1))
    validator = None if schedule else make_validator(valid, trained_items, config)
    trainer = Trainer(training, validator, progress=progress, callbacks=callbacks,
                      checkpoint=checkpoint, resume=resume, context=context)  # every stage's
    with clock.stage("train"):
        result = _fit_encoder(trainer, matrix if plan is None else plan.targets,
                              None if plan is None else plan.encoder, schedule)
    vectors, bias = result.encoder.export()
    stats = training_stats(counted, result)
    if plan is not None:
        stats.update(cold_items=plan.n_cold, features=plan.spec and plan.spec.describe())
    embeddings = ItemEmbeddings(trained_items, vectors, bias, config.training.temperature,
                                query_settings(config, ordered),
                                metadata={"config": config.to_dict(), "stats": stats},
                                item_table=item_table,
                                n_warm=plan.n_warm if plan is not None and not behaviour_first
                                else None)
    queries = None if schedule else validation_queries(valid, trained_items, config)
    if schedule is not None:
        embeddings.query = schedule.query
    elif config.training.tune_query:
        with clock.stage("query_tuning"):
            tune_on_validation(embeddings, queries, ordered)
    if counted.log is not None and (plan is None or behaviour_first):
        with clock.stage("history_finetune"):
            finetune_on_histories(result.encoder, embeddings, counted.log, queries, config,
                                  trainer, schedule)
    if behaviour_first:  # feature tower fitted to the frozen vectors, cold logits calibrated
        with clock.stage("cold_start"):
            cold_queries = None if schedule else validation_queries(
                valid, model_items, config, tasks=("s2i", "i2i"))
            result, embeddings = attach_cold_items(
                plan, result, embeddings,
                None if cold_queries is None else {"s2i": cold_queries["s2i"]},
                config.training, counted.item_counts, trainer,
                chosen=None if schedule is None else schedule.coldstart,
                pairs=None if cold_queries is None else cold_queries["i2i"])
        stats["coldstart"] = {**plan.coldstart, **{
            key: {k: v for k, v in plan.coldstart[key].items() if k != "curve"}
            for key in ("calibration", "similar_calibration") if key in plan.coldstart}}
    stats["seconds"] = clock.seconds
    return _wrap(counted, plan, embeddings, result, stats)


def _fit_encoder(trainer: Trainer, targets: sp.csr_matrix, encoder,
                 schedule: Schedule | None) -> TrainingResult:
    """Early-stopped training, or with a ``schedule`` exactly its epochs (0: the spectral
    start, which selection kept as the best candidate)."""
    if schedule is not None and schedule.epochs == 0:
        start = encoder.to(trainer.device) if encoder is not None \
            else trainer.build_encoder(targets)
        return TrainingResult(encoder=start, best_epoch=0)
    return trainer.fit(targets, encoder=encoder)


def _wrap(counted: Counted, plan, embeddings: ItemEmbeddings, result: TrainingResult,
          stats: dict) -> TrainedModel:
    stored = counted.matrix if counted.stored is None else counted.stored  # --min-support
    if plan is None or plan.n_cold == 0:
        return TrainedModel(embeddings, stored, counted.item_counts, result, stats,
                            {} if plan is None else plan.files(),
                            None if plan is None else plan.coldstart)
    n = len(plan.item_ids)  # cold items: empty co-occurrence rows, zero counts
    stored = sp.csr_matrix((stored.data, stored.indices,
                            np.concatenate([stored.indptr, np.full(plan.n_cold, stored.indptr[-1])])),
                           shape=(n, n))
    counts = np.concatenate([counted.item_counts, np.zeros(plan.n_cold, dtype=np.int64)])
    return TrainedModel(embeddings, stored, counts, result, stats, plan.files(), plan.coldstart)


def history_epochs(training: TrainingConfig, events: int) -> int:
    """``training.history_epochs``, or for auto: 10 up to ``AUTO_HISTORY_MAX_EVENTS`` training
    events, else 0 (an epoch scores every item for each of up to 300k examples)."""
    if training.history_epochs is not None:
        return training.history_epochs
    return AUTO_HISTORY_EPOCHS if events <= AUTO_HISTORY_MAX_EVENTS else 0


def finetune_on_histories(encoder, embeddings: ItemEmbeddings, log: EventLog,
                          queries: dict[str, Queries] | None, config: PipelineConfig,
                          trainer: Trainer | None = None,
                          schedule: Schedule | None = None) -> None:
    """History fine-tuning (``itemvec.train.histories``) where it applies: a validation slice to
    judge it (or a ``schedule`` that already chose its epochs), ``history_epochs`` > 0 and a
    full-softmax model (it scores every item per example). Vectors, logits and query settings
    change only if validation prefers the result. A probe round (``round_size``: a pass on small
    catalogues, seconds of work on large ones) must beat the start before whole passes are
    paid for: most logs gain nothing from it."""
    training = config.training
    epochs = history_epochs(training, log.n_events) if schedule is None \
        else schedule.history_epochs
    if (queries is None and schedule is None) or epochs == 0 \
            or resolve_objective(training.objective, len(embeddings)) != "softmax":
        return
    examples = build_examples(log, embeddings, seed=training.seed)
    if len(examples) == 0:
        return
    report = finetune(encoder, embeddings, examples, queries, epochs, training.history_lr,
                      training.batch_size, seed=training.seed, trainer=trainer,
                      probe_examples=round_size(len(examples), len(embeddings)))
    embeddings.metadata["stats"]["history_finetune"] = report
    if schedule is None:
        logger.info("history fine-tuning: validation HR@20 %.4f -> %.4f (epoch %d of %d, %.1fs)",
                    report["start"], report["best"], report["best_epoch"],
                    report["epochs_run"], report["seconds"])
    if report["best_epoch"]:
        embeddings.vectors, embeddings.item_bias = encoder.export()
        if training.tune_query and schedule is None:
            tune_on_validation(embeddings, queries, log.ordered, "query_tuning_after_histories")


def tune_on_validation(embeddings: ItemEmbeddings, queries: dict[str, Queries] | None,
                       ordered: bool, key: str = "query_tuning") -> None:
    """Set the bundle's query settings to the ones the held-out ``queries`` prefer; the
    trial record goes to ``stats[key]``."""
    if queries is None:
        return
    embeddings.query, info = tune_query(embeddings, queries, ordered)
    embeddings.metadata["stats"][key] = info


def training_stats(counted: Counted, result: TrainingResult,
                   seconds: float | None = None) -> dict:
    """The ``stats`` of a bundle's manifest: data counted, training run, ``extra_stats``."""
    return {
        "source": counted.source, "events": int(counted.events),
        "contexts": int(counted.contexts), "items": len(counted.item_ids),
        "cooccurrence_nonzeros": int(counted.matrix.nnz),
        "context_kind": "session" if counted.ordered else "basket",
        "best_epoch": result.best_epoch, "validation_hr@20": result.best_score,
        "epochs_run": result.epochs_run, "history": result.history, **counted.extra_stats,
        **({} if seconds is None else {"train_seconds": round(seconds, 3)}),
    }


def train(events: str | Path | list[Path], config: PipelineConfig, out: str | Path | None = None,
          progress: bool = True, callbacks: list[Callback] | tuple = (),
          resume: bool = False, context: LocalContext | None = None) -> TrainedModel:
    """``itemvec train``: read the log (and ``config.side``'s item table), train, write the bundle.

    With ``training.checkpoint_every`` set, a resumable checkpoint is kept (``out/.checkpoint``
    unless ``training.checkpoint_dir``) and removed once the bundle is in place; ``resume``
    continues from it. ``config.streaming.mode`` (auto, on, off) chooses ``train_streamed``
    over reading the log whole (``streaming.use_streaming``); ``memory_limit`` bounds its counter.
    """
    if out is not None:
        check_target(Path(out))  # fail before training, not after it
    streamed = use_streaming(events, config.streaming.mode, ingest=config.ingest)
    if streamed:
        _check_streamable(config)
    checkpoint = manager_for(config.training, out, resume)
    clock = StageClock()
    with clock.stage("read"):
        log = None if streamed else read_events(events, config.ingest)
        items = config.side.items
        table = read_item_table(items, config.side.item_key, items_reading(config.side)) \
            if items is not None else None
        side = side_information(table, config.side)
    options = dict(item_table=table, progress=progress, callbacks=callbacks,
                   checkpoint=checkpoint, resume=resume, side=side, clock=clock,
                   context=context)
    if streamed:
        model = train_streamed(events, config, memory_limit=config.streaming.memory_limit,
                               **options)
    else:
        model = train_on_log(log, config, **options)
    if out is not None:
        save_model(model, out, config)
    if checkpoint is not None:
        checkpoint.clear()
    return model


def _check_streamable(config: PipelineConfig) -> None:
    if config.cooccurrence.min_support > 1:
        raise ConfigError("--min-support needs the whole log in memory; use --streaming off "
                          "(or drop --min-support) to train with it")


def train_streamed(events: str | Path, config: PipelineConfig,
                   memory_limit: int | str | None = None,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, **options) -> TrainedModel:
    """``train_on_log(read_events(events), config)`` without ever holding the whole log.

    A pre-pass picks the held-out contexts exactly as ``holdout_by_time`` does; the rest is
    counted by ``count_file`` (bounded by ``memory_limit``) and a seeded sample of at most
    ``VALIDATION_CONTEXTS`` held-out contexts is read back for early stopping and tuning (all
    of them when fewer: then vocabulary, matrix, validation slice and, with the same seed,
    vectors equal the in-memory path's). ``options`` as for ``train_on_counts``.
    """
    _check_streamable(config)
    clock = options.pop("clock", None) or StageClock()
    training, progress = config.training, options.get("progress", True)
    with clock.stage("read"):  # passes over the file need the kind decided before they start
        ingest, decision = resolve_kind(events, config.ingest, chunk_rows)  # logs it
        reading = config.replace(ingest=ingest)
        holdout = hold_out(events, ingest, training.validation_fraction, training.seed,
                           chunk_rows=chunk_rows, progress=progress)
    exclude = holdout.valid["label"] if holdout.valid.height else None
    with clock.stage("count"):
        counted = _count_streamed(events, reading, holdout, exclude, memory_limit, chunk_rows,
                                  progress)
    with clock.stage("read"):
        sample = sample_valid(holdout, VALIDATION_CONTEXTS, training.seed)
        valid = read_contexts(events, ingest, sample, chunk_rows=chunk_rows, progress=progress)
    read_back = {"validation_contexts_read": 0 if valid is None else valid.n_contexts}
    counted.extra_stats["streaming"].update(read_back)
    counted.extra_stats["context_kind_decision"] = decision.to_dict()
    selected = train_on_counts(counted, config, valid, clock=clock, **options)
    if exclude is None or valid is None or not refits(config, options.get("side")):
        return clock.record(selected)
    schedule = Schedule.of(selected)
    with clock.stage("refit"):
        whole = _count_streamed(events, reading, holdout, None, memory_limit, chunk_rows,
                                progress)
        whole.extra_stats["streaming"].update(read_back)
        whole.extra_stats["context_kind_decision"] = decision.to_dict()
        final = train_on_counts(whole, config, None, clock=StageClock(), schedule=schedule,
                                **options)
    _record_selection(final, selected, schedule)
    return clock.record(final)


def _count_streamed(events: str | Path, config: PipelineConfig, holdout, exclude,
                    memory_limit, chunk_rows: int, progress: bool) -> Counted:
    """Count the file out of core, without the ``exclude`` contexts (the held-out slice)."""
    counts = count_file(events, config.ingest, config.cooccurrence, chunk_rows=chunk_rows,
                        memory_limit=memory_limit, grouped=None if holdout.grouped else False,
                        progress=progress, exclude=exclude)
    extra = {"streaming": {"holdout_contexts": holdout.valid.height,
                           "counting": {k: counts.stats.get(k) for k in (
                               "mode", "seconds", "events_per_second", "spilled_shards",
                               "memory_limit")}}}
    contexts = holdout.n_train if exclude is not None else holdout.n_train + holdout.valid.height
    ordered = is_ordered(config.ingest, config.ingest.time is not None)
    return Counted(counts.matrix, counts.item_ids, counts.item_counts, ordered,
                   str(Path(events)), counts.stats["events"], contexts, extra_stats=extra)


def side_information(table: pl.DataFrame | None,
                     side: FeatureConfig | None = None) -> SideInformation | None:
    """Item features are on whenever an item table is given (``side.features='none'`` turns them
    off); ``side.relations`` adds relation triples. None when there is nothing to add."""
    side = side or FeatureConfig()
    features = side.features
    chosen = parse_feature_option(features) if isinstance(features, str | None) else features
    if table is None and chosen:
        raise ConfigError("--features needs an item table; pass it with --items")
    if side.relations is None and (table is None or chosen == {}):
        return None
    triples = read_relations(side.relations) if side.relations is not None else None
    return SideInformation(table, chosen, triples, side)


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
    check_baselines(baselines)
    split = split_contexts(log, seed=seed)
    train_log, valid_log, test_log = (log.subset(np.sort(part)) for part in
                                      (split.train, split.valid, split.test))
    model = train_on_log(train_log, config, valid=valid_log, progress=progress)
    model_items = model.embeddings.item_ids
    queries = {task: build_queries(test_log, vocabulary_map(test_log, model_items), task,
                                   seed=seed, max_queries=max_queries) for task in TASKS}
    scorers = {"itemvec": model.embeddings}
    seconds = {"itemvec": model.stats["train_seconds"]}
    contexts = Contexts.from_log(train_log, vocabulary_map(train_log, model_items),
                                 len(model_items))
    for name in baselines:
        began = time.perf_counter()
        scorers[name] = build_baseline(name, model.cooccurrence, model.item_counts,
                                       contexts=contexts, seed=seed,
                                       half_life=query_settings(config, log.ordered)
                                       .recency_half_life)
        seconds[name] = round(time.perf_counter() - began, 3)

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


__all__ = ["Counted", "Queries", "TrainedModel", "evaluate_log", "train", "train_on_counts",
           "train_on_log", "train_streamed"]
