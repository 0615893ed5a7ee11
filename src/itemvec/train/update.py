"""Incremental updates: fold new events into a trained bundle without retraining from scratch.

    parent bundle (counts, encoder weights, config)  +  new event log
      -> extend the vocabulary with items first seen in the new events
      -> count the new pairs, decay the stored counts (optional), add them up
      -> start (default ``refresh``) from the spectral start of the merged counts, where a
         retrain would start, rotated onto the stored vectors (orthogonal Procrustes) so the
         new vectors stay comparable with the parent's; or (``stored``) copy the stored
         weights and start each new item where its features put it (bundles trained with an
         item table: their cold items warm up too), else at the co-occurrence-weighted mean
         direction of its known neighbours (popularity logit regressed from its mass)
      -> train for a short schedule (3 epochs), every anchor row by default; with ``stored``
         optionally only the rows the new events touched (the softmax still covers every item)
      -> a new, normal bundle whose manifest records the lineage

The parent bundle is only read; the new one is written atomically (``bundle.write_bundle``).
Pairs that span the boundary between the parent's data and the new events are not counted
(the parent's contexts are not stored), so an update sees slightly fewer pairs than a retrain.
With ``--min-support`` the parent stores pruned counts and the new counts are pruned on the new
events' support alone; relation edges the parent was trained with are not re-added; feature
vocabularies stay the parent's (unseen category values count as missing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from itemvec.config import IngestConfig, PipelineConfig, TrainingConfig, UpdateConfig
from itemvec.counting.cooccurrence import apply_min_support, count_pairs
from itemvec.data.ingest import EventLog, align_items, read_events
from itemvec.model.encoder import FeatureEncoder, ItemEncoder
from itemvec.model.features import SPEC_FILE, FeatureSpec
from itemvec.model.spectral import popularity_logits, spectral_vectors
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.store.bundle import (
    MANIFEST,
    load_cooccurrence,
    load_encoder_state,
    read_manifest,
    verify,
    write_bundle,
)
from itemvec.store.compact import compact_cold
from itemvec.train.pipeline import (
    Counted,
    holdout_by_time,
    make_validator,
    read_item_table,
    training_stats,
)
from itemvec.train.trainer import Trainer, TrainingResult, resolve_device
from itemvec.util.errors import BundleError, ConfigError, DataError, ItemvecError

logger = logging.getLogger(__name__)


@dataclass
class Parent:
    """What an update needs from the bundle it starts from (read once, never written)."""

    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    config: PipelineConfig
    embeddings: ItemEmbeddings
    cooccurrence: sp.csr_matrix
    item_counts: np.ndarray
    encoder_state: dict[str, torch.Tensor]
    files: dict[str, bytes] = field(default_factory=dict)  # extra bundle files (features.json)

    @property
    def n_items(self) -> int:
        return len(self.embeddings)

    @property
    def features(self) -> dict[str, Any] | None:
        """The parent's feature spec (``features.json``), when it was trained with features."""
        raw = self.files.get(SPEC_FILE)
        return None if raw is None else json.loads(raw)

    @property
    def n_warm(self) -> int:
        """Items with an id row (trained on behaviour); the rest are cold, features only."""
        features = self.features
        return self.n_items if features is None else int(features["encoder"]["n_items"])

    def end_time(self) -> float | None:
        """Newest event time the parent saw, where its manifest records one."""
        for section in ("lineage", "stats"):
            value = (self.manifest.get(section) or {}).get("data_range", {}).get("max_time")
            if value is not None:
                return float(value)
        return None


@dataclass
class UpdateResult:
    embeddings: ItemEmbeddings
    cooccurrence: sp.csr_matrix  # what the new bundle stores (after --min-support)
    item_counts: np.ndarray
    training: TrainingResult
    config: PipelineConfig
    lineage: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    new_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    files: dict[str, bytes] = field(default_factory=dict)  # extra bundle files (features.json)


# -- reading the parent --------------------------------------------------------------------------
def load_parent(path: str | Path) -> Parent:
    """Read and verify a bundle; it must hold co-occurrence counts and encoder weights."""
    path = Path(path)
    manifest = read_manifest(path)
    verify(path, manifest)
    for part, option in (("cooccurrence.npz", "co-occurrence counts"),
                         ("encoder.safetensors", "encoder weights")):
        if part not in manifest.get("files", {}):
            raise BundleError(f"{path}: bundle has no {option} ({part}); only bundles written by "
                              "`itemvec train` or `itemvec update` can be updated, retrain instead")
    embeddings = load_embeddings(path, check=False)
    counts = load_cooccurrence(path)
    if counts.shape != (len(embeddings), len(embeddings)):
        raise BundleError(f"{path}/cooccurrence.npz: shape {counts.shape} does not match "
                          f"{len(embeddings)} items; the bundle is inconsistent, retrain it")
    table = embeddings.item_table
    item_counts = (table["count"].to_numpy().astype(np.int64)
                   if table is not None and "count" in table.columns
                   else np.zeros(len(embeddings), dtype=np.int64))
    digest = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    config = PipelineConfig.from_dict(manifest.get("config", {}))
    files = {name: (path / name).read_bytes() for name in manifest.get("files", {})
             if name == SPEC_FILE}
    return Parent(path, manifest, digest, config, embeddings, counts, item_counts,
                  load_encoder_state(path), files)


# -- vocabulary and counts -----------------------------------------------------------------------
@dataclass
class VocabularyPlan:
    """Old warm items, newly warm ones (events now), then cold ones (features only)."""

    vocabulary: np.ndarray
    n_warm: int
    parent_positions: np.ndarray  # parent index -> index in ``vocabulary``
    log: EventLog  # the new events over ``vocabulary`` (warm items only)


def plan_vocabulary(parent_ids: np.ndarray, n_warm: int, log: EventLog, min_count: int = 1,
                    table_ids: Sequence[str] = ()) -> VocabularyPlan:
    """Keep the parent's warm items in place; warm up the items the new events bring (parent's
    cold items and unseen ones, in >= ``min_count`` contexts); the rest of the parent's cold
    items and the table's unseen items stay cold, at the end."""
    parent_ids = np.asarray([str(i) for i in parent_ids], dtype=object)
    position = {item: i for i, item in enumerate(parent_ids)}
    log_ids = [str(i) for i in log.item_ids]
    active = log.item_counts() >= min_count
    newly = [item for item, on in zip(log_ids, active, strict=True)
             if on and position.get(item, n_warm) >= n_warm]  # log order: most frequent first
    warm_now = set(newly)
    cold = [item for item in parent_ids[n_warm:] if item not in warm_now]
    cold += [item for item in dict.fromkeys(str(i) for i in table_ids)
             if item not in position and item not in warm_now]
    vocabulary = np.asarray(list(parent_ids[:n_warm]) + newly + cold, dtype=object)
    index = {item: i for i, item in enumerate(vocabulary)}
    n_warm_new = n_warm + len(newly)
    mapping = np.asarray([index[item] if index.get(item, n_warm_new) < n_warm_new else -1
                          for item in log_ids], dtype=np.int64)
    positions = np.asarray([index[item] for item in parent_ids], dtype=np.int64)
    return VocabularyPlan(vocabulary, n_warm_new, positions, _reindex(log, mapping, vocabulary))


def _reindex(log: EventLog, mapping: np.ndarray, vocabulary: np.ndarray) -> EventLog:
    mapped = mapping[log.items]
    keep = mapped >= 0
    ctx = np.repeat(np.arange(log.n_contexts), log.lengths())[keep]
    indptr = np.zeros(log.n_contexts + 1, dtype=np.int64)
    np.cumsum(np.bincount(ctx, minlength=log.n_contexts), out=indptr[1:])
    return EventLog(item_ids=vocabulary, context_ids=log.context_ids, indptr=indptr,
                    items=mapped[keep].astype(np.int32), weights=log.weights[keep],
                    times=None if log.times is None else log.times[keep],
                    ordered=log.ordered, source=log.source, decision=log.decision)


def move(matrix: sp.csr_matrix, positions: np.ndarray, n: int) -> sp.csr_matrix:
    """``matrix`` with row/column i moved to ``positions[i]`` of an n x n matrix."""
    coo = matrix.tocoo()
    return sp.csr_matrix((coo.data, (positions[coo.row], positions[coo.col])), shape=(n, n),
                         dtype=matrix.dtype)


def decay_factor(parent: Parent, log: EventLog, half_life: float | None) -> float:
    """0.5 ** (time from the parent's newest event to the newest new event / half-life)."""
    if half_life is None:
        return 1.0
    if log.times is None:
        raise ConfigError("--decay-half-life needs event times; name the time column with --time")
    end = parent.end_time()
    if end is None:  # a bundle from `train` records no time range: assume the new data follows on
        end = float(log.times.min())
    age = max(float(log.times.max()) - end, 0.0)
    return float(np.power(0.5, age / half_life))


def touched_rows(new_counts: sp.csr_matrix) -> np.ndarray:
    """Items whose co-occurrence row the new events changed."""
    return np.diff(new_counts.tocsr().indptr) > 0


# -- the encoder ---------------------------------------------------------------------------------
def neighbour_vectors(counts: sp.csr_matrix, vectors: np.ndarray, rows: np.ndarray,
                      known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Co-occurrence-weighted mean direction of each row's ``known`` neighbours.

    Returns (vectors, found): rows without a known neighbour get zeros and found=False.
    """
    weights = counts[rows][:, known]
    units = vectors[known] / np.maximum(np.linalg.norm(vectors[known], axis=1, keepdims=True),
                                        1e-12)
    mean = np.asarray(weights @ units)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    found = norms[:, 0] > 1e-12
    return np.where(found[:, None], mean / np.maximum(norms, 1e-12), 0.0), found


def initial_rows(counts: sp.csr_matrix, old_vectors: np.ndarray, old_bias: np.ndarray,
                 n_new: int, init: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Starting id embeddings and popularity logits for the ``n_new`` appended items.

    Vectors: the direction of known neighbours (two passes, so a new item whose partners are
    all new inherits from those), scaled to the median norm of the stored rows; items with no
    neighbour at all start small and random. Logits: the parent's logits regressed on
    log co-occurrence mass, evaluated at the new item's mass.
    """
    n_old, dim = old_vectors.shape
    rng = np.random.default_rng(seed)
    scale = float(np.median(np.linalg.norm(old_vectors, axis=1))) if n_old else 1.0
    vectors = np.concatenate([old_vectors, np.zeros((n_new, dim), np.float32)])
    rows = n_old + np.arange(n_new)
    known = np.zeros(n_old + n_new, dtype=bool)
    known[:n_old] = True
    if init == "neighbours" and n_new:
        for _ in range(2):
            pending = rows[~known[rows]]
            if len(pending) == 0 or not known.any():
                break
            found_vectors, found = neighbour_vectors(counts, vectors, pending, np.flatnonzero(known))
            vectors[pending[found]] = found_vectors[found] * scale
            known[pending[found]] = True
    missing = rows[~known[rows]]
    vectors[missing] = rng.normal(0, 0.1, size=(len(missing), dim))
    return vectors[n_old:].astype(np.float32), _bias_for_new(counts, old_bias, n_new)


def _bias_for_new(counts: sp.csr_matrix, old_bias: np.ndarray, n_new: int) -> np.ndarray:
    n_old = len(old_bias)
    mass = np.log1p(np.asarray(counts.sum(axis=0)).ravel().astype(np.float64))
    if n_old >= 2 and np.ptp(mass[:n_old]) > 0:
        slope, intercept = np.polyfit(mass[:n_old], old_bias.astype(np.float64), 1)
    else:
        slope, intercept = 0.0, float(np.mean(old_bias)) if n_old else 0.0
    return (slope * mass[n_old:] + intercept).astype(np.float32)


def extend_encoder(state: dict[str, torch.Tensor], config: PipelineConfig, n_warm: int,
                   new_vectors: np.ndarray, new_bias: np.ndarray,
                   features: dict[str, Any] | None = None,
                   index: list[np.ndarray] | None = None) -> ItemEncoder:
    """An encoder over ``n_warm`` id rows: stored weights copied, new rows appended.

    With the parent's feature spec (``features``) it is a ``FeatureEncoder`` reading the feature
    ``index`` rows of the whole vocabulary (warm then cold items).
    """
    training = config.training
    if features is None:
        encoder = ItemEncoder(n_warm, training.dim, training.hidden)
    else:
        spec = features.get("config", {})
        encoder = FeatureEncoder(n_warm, training.dim, training.hidden,
                                 features["encoder"]["field_sizes"], index,
                                 spec.get("id_dropout", 0.25), spec.get("field_dropout", 0.1))
    target = encoder.state_dict()
    unknown = sorted(set(state) - set(target))
    if unknown:
        raise BundleError(f"encoder.safetensors holds {unknown[0]!r}, which this itemvec's "
                          "encoder does not know; update with the itemvec that trained it")
    n_old = n_warm - len(new_vectors)
    fill = {"item_embedding.weight": new_vectors, "item_bias": new_bias,
            "feature_share": np.zeros(len(new_vectors), np.float32),  # new rows: id vector only
            "item_logits.weight": np.zeros((len(new_vectors),) + tuple(
                target.get("item_logits.weight", torch.zeros(0, 0)).shape[1:]), np.float32)}
    for name, value in state.items():
        if name in fill and value.shape[0] == n_old:
            extra = torch.as_tensor(fill[name], dtype=value.dtype)
            value = torch.cat([value, extra.reshape((-1,) + tuple(value.shape[1:]))])
        if value.shape != target[name].shape:
            raise BundleError(f"encoder.safetensors: {name} has shape {tuple(value.shape)}, "
                              f"expected {tuple(target[name].shape)} for {n_old} + "
                              f"{len(new_vectors)} items; the bundle is inconsistent")
        target[name] = value
    encoder.load_state_dict(target)
    return encoder


@torch.no_grad()
def place_from_features(encoder: ItemEncoder, rows: np.ndarray, scale: float) -> int:
    """Start the id rows (and logits) of ``rows`` where the item's features alone put it.

    Only for a ``FeatureEncoder`` and rows with at least one feature value; returns how many.
    """
    if not isinstance(encoder, FeatureEncoder) or len(rows) == 0:
        return 0
    items = torch.as_tensor(rows, dtype=torch.long)
    present = torch.stack([index.reshape(len(items), -1).gt(0).any(dim=1)
                           for index in encoder.feature_rows(items)], dim=1).any(dim=1)
    items = items[present]
    if len(items) == 0:
        return 0
    was_training = encoder.training
    encoder.eval()
    vectors = encoder.feature_vectors(items)
    encoder.item_embedding.weight[items] = vectors * scale
    encoder.item_bias[items] = encoder.cold_logits(vectors)
    encoder.train(was_training)
    return len(items)


@torch.no_grad()
def refresh_rows(encoder: ItemEncoder, counts: sp.csr_matrix, seed: int) -> None:
    """Restart every id row and logit from the spectral start of the merged ``counts``.

    This is where a retrain starts, minus re-reading the old events. The spectral factor is
    rotated onto the stored rows (orthogonal Procrustes): cosines do not change, but vectors
    stay comparable with the parent's for anyone who cached them.
    """
    weight = encoder.item_embedding.weight
    stored = weight.detach().cpu().numpy().astype(np.float64)
    fresh = spectral_vectors(counts, stored.shape[1], seed).astype(np.float64)
    u, _, vt = np.linalg.svd(fresh.T @ stored)
    weight.copy_(torch.as_tensor(fresh @ (u @ vt), dtype=weight.dtype))
    encoder.item_bias.copy_(torch.as_tensor(popularity_logits(counts), dtype=weight.dtype))


# -- the update ----------------------------------------------------------------------------------
def pinned_kind(ingest: IngestConfig, stats: dict[str, Any] | None) -> IngestConfig:
    """New events are read as the parent's contexts were (sessions or baskets): ``auto``
    is not decided again on a small batch, where it could flip."""
    kind = (stats or {}).get("context_kind")
    if ingest.context_kind != "auto" or kind not in ("session", "basket"):
        return ingest
    return ingest.replace(context_kind=kind)


def update_log(parent: Parent, log: EventLog, settings: UpdateConfig | None = None,
               valid: EventLog | None = None, item_table: pl.DataFrame | None = None,
               ingest: IngestConfig | None = None, progress: bool = True) -> UpdateResult:
    """Fold an already-read log of new events into ``parent``; nothing is written."""
    settings = settings or UpdateConfig()
    started = time.perf_counter()
    config = parent.config.replace(ingest=ingest or parent.config.ingest, update=settings)
    seen = _time_range(log)  # of every new event, the held-out slice included
    held_out = 0
    if valid is None:
        log, valid = holdout_by_time(log, settings.validation_fraction, config.training.seed)
        held_out = 0 if valid is None else valid.n_contexts
    features = parent.features
    table = merge_item_tables(parent.embeddings.item_table, item_table)
    plan = plan_vocabulary(parent.embeddings.item_ids, parent.n_warm, log,
                           config.cooccurrence.min_count,
                           table["item_id"].to_list() if features and table is not None else ())
    log, vocabulary, n_warm, n_old = plan.log, plan.vocabulary, plan.n_warm, parent.n_warm
    n = len(vocabulary)
    fresh = count_pairs(log, config.cooccurrence)
    factor = decay_factor(parent, log, settings.decay_half_life
                          or config.cooccurrence.time_decay_half_life)
    old = move(parent.cooccurrence, plan.parent_positions, n) * factor
    counts = (old + fresh).tocsr().astype(np.float32)
    warm_counts = counts[:n_warm, :n_warm]
    vectors = parent.encoder_state["item_embedding.weight"].float().numpy()
    bias = parent.encoder_state["item_bias"].float().numpy()
    new_vectors, new_bias = initial_rows(warm_counts, vectors, bias, n_warm - n_old,
                                         settings.init, config.training.seed)
    index = None if features is None else _feature_index(features, table, vocabulary)
    encoder = extend_encoder(parent.encoder_state, config, n_warm, new_vectors, new_bias,
                             features, index)
    refresh = settings.start == "refresh" and settings.epochs > 0  # 0 epochs: only placing
    if refresh:  # new items with features are then placed from them, in the rotated frame
        refresh_rows(encoder, warm_counts, config.training.seed)
    from_features = place_from_features(encoder, np.arange(n_old, n_warm),
                                        float(np.median(np.linalg.norm(vectors, axis=1))))
    touched = touched_rows(fresh)[:n_warm]
    if refresh or settings.anchors == "all":
        touched = np.ones(n_warm, dtype=bool)
    targets = warm_counts if touched.all() else _rows_only(warm_counts, touched)
    if targets.nnz == 0:
        raise DataError(f"{log.source}: the new events hold no co-occurring pair of items; "
                        "nothing to update")
    training = config.training.replace(epochs=max(settings.epochs, 1),
                                       patience=settings.patience, patience_batches=0,
                                       eval_every=settings.eval_every,
                                       lr=settings.lr or config.training.lr,
                                       batch_size=settings.batch_size or config.training.batch_size,
                                       precision=_precision_here(config.training))
    result = _train(encoder, targets, training if settings.epochs else None, valid, vocabulary,
                    config, progress)
    out_vectors, out_bias = result.encoder.export()
    item_counts = np.zeros(n, np.int64)
    item_counts[plan.parent_positions] = parent.item_counts
    item_counts = item_counts + log.item_counts()
    seconds = time.perf_counter() - started
    lineage = _lineage(parent, log, fresh, n_warm - n_old, factor, settings, touched, result)
    lineage.update(data_range=seen, validation_contexts=held_out,
                   new_items_placed_from_features=from_features)
    stats = training_stats(Counted(counts, vocabulary, item_counts, log.ordered, log.source,
                                   log.n_events, log.n_contexts,
                                   extra_stats={"data_range": _time_range(log)}), result, seconds)
    stats["cold_items"] = n - n_warm  # cold rows come last; loading marks them from this
    rows = None
    if n_warm < n:  # cold items with identical features share a vector: stored once
        out_vectors, rows = compact_cold(out_vectors, n_warm)
    embeddings = ItemEmbeddings(vocabulary, out_vectors, out_bias, parent.embeddings.temperature,
                                parent.embeddings.query,
                                metadata={"config": config.to_dict(), "stats": stats,
                                          "lineage": lineage}, item_table=table, n_warm=n_warm,
                                vector_rows=rows)
    stored = (move(parent.cooccurrence, plan.parent_positions, n) * factor
              + apply_min_support(fresh, log, config.cooccurrence)).tocsr().astype(np.float32)
    files = {} if features is None else {SPEC_FILE: _spec_file(features, n_warm)}
    logger.info("update: %d new items, %d new events, %d epochs in %.1fs", n_warm - n_old,
                log.n_events, result.epochs_run, seconds)
    return UpdateResult(embeddings, stored, item_counts, result, config, lineage, stats,
                        vocabulary[n_old:n_warm], files)


def _feature_index(features: dict[str, Any], table: pl.DataFrame | None,
                   vocabulary: np.ndarray) -> list[np.ndarray]:
    spec = FeatureSpec.from_dict({k: v for k, v in features.items() if k != "encoder"})
    if table is None:
        raise BundleError("the bundle was trained with item features but stores no item table; "
                          "pass the item table with --items")
    index = spec.transform(align_items(table, vocabulary))
    return [index[name] for name in spec.names]


def _spec_file(features: dict[str, Any], n_warm: int) -> bytes:
    data = {**features, "encoder": {**features["encoder"], "n_items": n_warm}}
    return json.dumps(data, indent=1).encode()


def _train(encoder: ItemEncoder, targets: sp.csr_matrix, training: TrainingConfig | None,
           valid: EventLog | None, vocabulary: np.ndarray, config: PipelineConfig,
           progress: bool) -> TrainingResult:
    """The short schedule; without one (0 epochs) the extended encoder is returned as it is."""
    if training is None:
        return TrainingResult(encoder=encoder)
    validator = make_validator(valid, vocabulary, config)
    return Trainer(training, validator, progress=progress).fit(targets, encoder=encoder)


def _precision_here(training: TrainingConfig) -> str:
    """A bundle trained in fp16 on a GPU may be updated on a CPU: fp32 there (fp16 needs CUDA)."""
    if training.precision == "fp16" and resolve_device(training.device).type != "cuda":
        logger.warning("the bundle was trained with precision fp16, which needs CUDA; updating "
                       "in fp32 on %s", resolve_device(training.device))
        return "fp32"
    return training.precision


def _rows_only(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with every row outside ``rows`` (bool mask) emptied."""
    return (sp.diags(rows.astype(np.float32)) @ matrix).tocsr()


def _time_range(log: EventLog) -> dict[str, float | None]:
    if log.times is None or log.n_events == 0:
        return {"min_time": None, "max_time": None}
    return {"min_time": float(log.times.min()), "max_time": float(log.times.max())}


def _lineage(parent: Parent, log: EventLog, fresh: sp.csr_matrix, n_new: int, factor: float,
             settings: UpdateConfig, touched: np.ndarray, result: TrainingResult) -> dict:
    previous = parent.manifest.get("lineage") or {}
    upper = sp.triu(fresh, k=1)
    return {
        "parent": str(parent.path.resolve()),
        "parent_manifest_sha256": parent.manifest_sha256,
        "parent_created": parent.manifest.get("created"),
        "parent_items": parent.n_items,
        "generation": int(previous.get("generation", 0)) + 1,
        "data_range": _time_range(log),
        "source": log.source,
        "added": {"events": int(log.n_events), "contexts": int(log.n_contexts),
                  "new_items": int(n_new), "pairs": int(upper.nnz),
                  "pair_weight": round(float(upper.sum()), 3)},
        "decay_factor": factor,
        "settings": settings.to_dict(),
        "anchors_trained": int(touched.sum()) if settings.anchors == "touched" else None,
        "best_epoch": result.best_epoch,
        "validation_hr@20": result.best_score,
    }


def merge_item_tables(old: pl.DataFrame | None, new: pl.DataFrame | None) -> pl.DataFrame | None:
    """Rows of ``new`` win; the parent's rows stay for items ``new`` does not list."""
    old = old.drop("count") if old is not None and "count" in old.columns else old
    if old is not None and old.width <= 1:
        old = None
    if new is None or old is None:
        return new if old is None else old
    kept = old.filter(~pl.col("item_id").is_in(new["item_id"].implode()))
    return pl.concat([new, kept], how="diagonal_relaxed")


def save_update(result: UpdateResult, out: str | Path, parent: Parent) -> Path:
    """Write the updated model as a normal bundle (atomically); the parent is never touched."""
    out = Path(out)
    if out.resolve() == parent.path.resolve():
        raise ItemvecError(f"--out {out} is the bundle being updated; write the update to a new "
                           "directory (the old bundle stays untouched)")
    return write_bundle(out, result.embeddings, config=result.config.to_dict(),
                        stats=result.stats, encoder_state=result.training.encoder.state_dict(),
                        cooccurrence=result.cooccurrence, item_counts=result.item_counts,
                        extra={"lineage": result.lineage},
                        extra_files=result.files or None)


def update(bundle: str | Path, events: str | Path, out: str | Path | None = None,
           items: str | Path | None = None, item_key: str = "item_id",
           ingest: IngestConfig | dict[str, Any] | None = None,
           settings: UpdateConfig | None = None, progress: bool = True) -> UpdateResult:
    """``itemvec update``: read the parent bundle and the new events, update, write ``out``.

    ``ingest`` overrides the parent's column settings (a dict changes only the keys it names).
    """
    parent = load_parent(bundle)
    if out is not None and Path(out).resolve() == parent.path.resolve():
        raise ItemvecError(f"--out {out} is the bundle being updated; write the update to a new "
                           "directory (the old bundle stays untouched)")
    if isinstance(ingest, dict):
        ingest = parent.config.ingest.replace(**{k: v for k, v in ingest.items() if v is not None})
    ingest = pinned_kind(ingest or parent.config.ingest, parent.manifest.get("stats"))
    log = read_events(events, ingest)
    table = read_item_table(items, item_key) if items is not None else None
    result = update_log(parent, log, settings, item_table=table, ingest=ingest,
                        progress=progress)
    if out is not None:
        save_update(result, out, parent)
    return result


__all__ = ["Parent", "UpdateConfig", "UpdateResult", "load_parent", "pinned_kind", "save_update",
           "update", "update_log"]
