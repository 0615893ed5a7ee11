"""Behaviour-first side information: a feature tower fitted to the frozen behaviour vectors.

The default way ``itemvec train --items`` uses item features (``features.mode``):

1. the behaviour model is trained exactly as without side information (same seed, same
   vectors and popularity logits for warm items), so warm quality cannot get worse;
2. a feature tower g(features) -> unit vector (the ``FeatureEncoder`` feature path: field
   value embeddings, softmax field weights, L2 norm) is fitted to the frozen warm vectors with
   a contrastive loss: softmax over warm items of cos(g(x_i), e_j) / T, target j = i. A random
   ``features.holdout`` share of warm items is held out (pseudo-cold) and stops it early;
3. a ridge regression from g(x) to the warm popularity logits gives each cold item a logit;
4. one global offset on the cold logits is chosen on the validation queries: pseudo-cold items
   get their tower vectors and predicted logits, and the offset that maximises HR@20 of
   pseudo-cold (and naturally cold) targets, while warm-target HR@20 drops at most
   ``features.max_warm_drop`` (relative) against no cold items at all, wins. A regressed logit
   under-rates the popular new items that dominate cold queries; the offset corrects that,
   and the warm constraint keeps cold items from crowding warm ones out of the top 20;
   The same is done for ``similar`` (``SIMILAR_OFFSETS``, added to cold items' cosines) on
   the validation i2i pairs, with every real cold item of the catalogue ranked too: the
   share of cold items in a warm item's neighbours is then chosen on validation, not by how
   many the catalogue holds. It goes to the query setting ``cold_similarity_offset``;
5. the tower and the ridge are refitted on all warm items for the chosen number of epochs;
6. warm items with little behaviour may lean on their features: vector =
   normalize((1 - s) e_id + s g(x)) with s = c / (contexts + c), the prior strength c chosen
   on the validation queries (warm targets) from ``PRIORS``; it must beat c = 0 (every warm item
   exactly its behaviour vector) by a paired z >= ``PRIOR_Z``, else warm vectors stay
   bit-identical.

The result is a ``FeatureEncoder`` with ``id_only`` set: its warm rows are the behaviour
vectors, its feature path embeds cold items, and ``cold_offset`` holds the calibration, so
``itemvec embed`` and ``itemvec update`` apply it to new items as they are.

A cold item's vector depends on its feature row alone, so cold items are grouped by identical
feature rows (``ColdGroups``) once: the tower embeds one item per group (in the calibration of
``similar`` and in the model returned), and the model stores each group's vector once
(``store.compact``): a million-row catalogue with a few thousand distinct feature rows costs
a few thousand tower passes and vectors, not a million.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from itemvec.config import TrainingConfig
from itemvec.evaluation.protocol import Queries, target_ranks
from itemvec.model.encoder import FeatureEncoder, ItemEncoder
from itemvec.model.features import SidePlan
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.store.compact import ROWS_DTYPE, unique_rows
from itemvec.train.trainer import Stage, Trainer, TrainingResult

logger = logging.getLogger(__name__)

K = 20
OFFSETS = np.round(np.arange(-4.0, 10.01, 0.25), 2)  # candidate shifts of the cold logits
SIMILAR_OFFSETS = np.round(np.arange(-2.0, 0.501, 0.05), 2)  # shifts of cold cosines (similar)
SIMILAR_BLOCK = 32  # i2i queries scored at once against every item (32 x 1M floats = 128 MB)
PATIENCE = 3  # tower epochs without a better held-out loss before it stops
COLDSTART = "coldstart"  # the tower's stage name in callbacks and logs
BATCH = 512
MIN_PSEUDO_COLD = 200  # pseudo-cold items wanted over all folds (small catalogues)
MAX_FOLDS = 5
# below these, a 0.5% warm budget cannot be resolved and the offset would be noise
MIN_WARM_QUERIES, MIN_COLD_QUERIES = 200, 30
PRIORS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)  # contexts' worth of evidence the features count as
PRIOR_Z = 2.0  # a feature prior must beat none by this paired z on validation (~2 sigma)
EMBED_BLOCK = 8192  # items through the tower at once


@dataclasses.dataclass(frozen=True)
class ColdGroups:
    """Cold items grouped by identical feature rows (so identical tower vectors).

    ``first``: one item row per group (absolute, >= n_warm), in order of first occurrence;
    ``inverse``: each cold item's group; ``counts``: items per group."""
    first: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, plan: SidePlan) -> ColdGroups:
        n_cold = len(plan.item_ids) - plan.n_warm
        keys = np.concatenate([np.zeros((n_cold, 0), np.int64)] + [
            np.asarray(f[plan.n_warm:], dtype=np.int64).reshape(n_cold, int(np.prod(f.shape[1:])))
            for f in plan.index],
            axis=1)
        first, inverse = unique_rows(keys)
        return cls(plan.n_warm + first, inverse, np.bincount(inverse, minlength=len(first)))


def feature_vectors(tower: FeatureEncoder, rows: np.ndarray) -> np.ndarray:
    """Feature-only vectors of item ``rows`` through ``tower``, in blocks."""
    with torch.no_grad():
        return np.concatenate([np.zeros((0, tower.dim), np.float32)] + [
            tower.feature_vectors(torch.as_tensor(rows[i:i + EMBED_BLOCK])).numpy()
            for i in range(0, len(rows), EMBED_BLOCK)])


def attach_cold_items(plan: SidePlan, result: TrainingResult, warm: ItemEmbeddings,
                      queries: dict[str, Queries] | None, training: TrainingConfig,
                      item_counts: np.ndarray | None = None, trainer: Trainer | None = None,
                      chosen: dict | None = None, pairs: Queries | None = None
                      ) -> tuple[TrainingResult, ItemEmbeddings]:
    """Fit the tower to ``result.encoder`` and return the model over warm + cold items.

    ``warm`` is the behaviour model as the pipeline would ship it (query settings tuned);
    ``queries`` are validation queries over ``plan.item_ids`` (None: no calibration slice);
    ``pairs`` validation i2i queries over them that calibrate cold items in ``similar``.
    ``chosen`` is an earlier run's report (the refit on every context): its tower epochs,
    cold offset and feature prior are replayed instead of being chosen again.
    The tower trains as ``trainer``'s ``coldstart`` stage (a CPU one when None).
    """
    config = plan.spec.config
    trainer = trainer if trainer is not None else Trainer(training, progress=False)
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    targets = torch.as_tensor(warm.vectors)
    has = np.flatnonzero(np.stack([(f[:plan.n_warm] > 0).any(axis=1) for f in plan.index],
                                  axis=1).any(axis=1))
    if chosen is not None:
        return _replay(plan, result, warm, training, item_counts, chosen, has, targets, rng,
                       trainer)
    groups = ColdGroups.of(plan)
    report: dict[str, Any] = {"mode": "behaviour-first", "tower_items": int(len(has))}
    curves, similar_curves, epochs, losses = [], [], [], []
    for held in pseudo_cold_folds(has, config.holdout, rng):
        fit_rows = np.setdiff1d(has, held)
        tower = build_tower(result.encoder, plan, training, fit_rows)  # no held-out in means
        best, fold_losses = train_tower(tower, targets, fit_rows, held, config.tower_epochs,
                                        config.tower_lr, training.temperature, rng, trainer=trainer)
        epochs.append(best)
        losses.append(fold_losses)
        if queries is not None:
            curves.append(calibration_hits(tower, warm, plan.n_warm, held, queries))
        if pairs is not None:
            similar_curves.append(similar_hits(tower, warm, len(plan.item_ids), held, pairs,
                                               groups))
    report.update(tower_epochs=int(np.median(epochs)) if epochs else 1,
                  pseudo_cold=int(sum(len(c[0]) for c in curves)) if curves else 0,
                  folds=len(epochs), held_out_loss=losses)
    if curves:
        offset, report["calibration"] = choose_offset(curves, config.max_warm_drop)
    elif len(has) > warm.dim:  # no validation slice: the expected partition-function gap
        tower = build_tower(result.encoder, plan, training, has)
        tower.fit_cold_bias(rows=torch.as_tensor(has))
        index = torch.arange(plan.n_warm)
        with torch.no_grad():
            offset = tower.partition_gap(index, tower.feature_vectors(index))
        report["calibration"] = {"method": "partition-gap (no validation queries)"}
        logger.warning("behaviour-first: no validation queries to calibrate cold items on; "
                       "using the partition-function gap %.3f as the offset", offset)
    else:
        offset, report["calibration"] = 0.0, {"method": "none (too few items with features)"}
    report["similar_offset"], report["similar_calibration"] = (
        choose_offset(similar_curves, config.max_warm_drop, SIMILAR_OFFSETS) if similar_curves
        else (None, {"method": "none (no validation i2i pairs)"}))
    tower = _final_tower(plan, result, warm, training, has, targets, report["tower_epochs"], rng,
                         trainer)
    tower.cold_offset.fill_(float(offset))
    report["offset"] = float(offset)
    if queries is not None and item_counts is not None:
        share, report["feature_prior"] = choose_feature_prior(tower, warm, has, queries,
                                                              item_counts)
        tower.feature_share.copy_(torch.as_tensor(share))
    return _attach(plan, result, warm, tower, report, len(has), groups)


def _replay(plan: SidePlan, result: TrainingResult, warm: ItemEmbeddings,
            training: TrainingConfig, item_counts: np.ndarray | None, chosen: dict,
            has: np.ndarray, targets: torch.Tensor, rng: np.random.Generator,
            trainer: Trainer | None = None) -> tuple[TrainingResult, ItemEmbeddings]:
    """The refit's cold start: ``chosen``'s tower epochs, offset and prior, no validation."""
    report = {**chosen, "tower_items": int(len(has)), "replayed": True}
    tower = _final_tower(plan, result, warm, training, has, targets, chosen["tower_epochs"], rng,
                         trainer)
    tower.cold_offset.fill_(float(chosen["offset"]))
    prior = float((chosen.get("feature_prior") or {}).get("prior", 0.0))
    if prior and item_counts is not None:
        counts = np.asarray(item_counts[:len(warm)], dtype=np.float64)
        share = np.zeros(len(warm))
        share[has] = prior / (counts[has] + prior)
        tower.feature_share.copy_(torch.as_tensor(share.astype(np.float32)))
    return _attach(plan, result, warm, tower, report, len(has), ColdGroups.of(plan))


def _final_tower(plan: SidePlan, result: TrainingResult, warm: ItemEmbeddings,
                 training: TrainingConfig, has: np.ndarray, targets: torch.Tensor, epochs: int,
                 rng: np.random.Generator, trainer: Trainer | None = None) -> FeatureEncoder:
    """The tower fitted on every warm item with features for ``epochs``, cold logits set."""
    config = plan.spec.config
    tower = build_tower(result.encoder, plan, training, has)
    train_tower(tower, targets, has, np.zeros(0, np.int64), epochs,
                config.tower_lr, training.temperature, rng, fixed=True, trainer=trainer)
    if len(has) > warm.dim:
        tower.fit_cold_bias(rows=torch.as_tensor(has))
    else:  # too few warm items with features to regress on: the mean logit
        logger.warning("behaviour-first: only %d warm items have features; cold items get the "
                       "mean popularity logit", len(has))
        tower.cold_bias.zero_()
        tower.cold_bias[-1] = float(warm.item_bias.mean())
    return tower


def _attach(plan: SidePlan, result: TrainingResult, warm: ItemEmbeddings, tower: FeatureEncoder,
            report: dict, n_has: int, groups: ColdGroups
            ) -> tuple[TrainingResult, ItemEmbeddings]:
    """The model over warm + cold items from the fitted ``tower``, cold items stored compactly
    (one vector per feature-row group); the report goes to plan."""
    offset = report["offset"]
    plan.encoder, plan.coldstart = tower, report
    stored, bias, rows = compact_export(tower, warm, groups)
    query = warm.query.replace(cold_similarity_offset=report.get("similar_offset"))
    embeddings = ItemEmbeddings(plan.item_ids, stored, bias, warm.temperature, query,
                                warm.metadata, warm.item_table, n_warm=plan.n_warm,
                                vector_rows=rows if plan.n_cold else None)
    logger.info("behaviour-first: tower %d epochs on %d items, cold offset %.2f (%s)",
                report["tower_epochs"], n_has, offset,
                report["calibration"].get("summary", "-"))
    logger.info("behaviour-first: similar's cold offset %s (%s)", report.get("similar_offset"),
                (report.get("similar_calibration") or {}).get("summary", "-"))
    return dataclasses.replace(result, encoder=tower), embeddings


def compact_export(tower: FeatureEncoder, warm: ItemEmbeddings, groups: ColdGroups
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stored vectors, logits, rows)`` of warm then cold items: warm rows as the tower gives
    them (bit-identical to ``warm`` unless a feature prior leans on features), then one vector
    per cold group, each cold item's logit its group's, ``rows`` each item's stored row."""
    n_warm = len(warm)
    if bool((tower.feature_share > 0).any()):
        with torch.no_grad():
            index = torch.arange(n_warm)
            warm_vectors = torch.cat([tower.forward(index[i:i + EMBED_BLOCK])
                                      for i in range(0, n_warm, EMBED_BLOCK)]).numpy()
    else:
        warm_vectors = warm.vectors  # bit-identical to the behaviour model
    cold = feature_vectors(tower, groups.first)
    with torch.no_grad():
        cold_bias = tower.cold_logits(torch.as_tensor(cold)).numpy()
    stored = np.concatenate([warm_vectors, cold]).astype(np.float32)
    bias = np.concatenate([warm.item_bias, cold_bias[groups.inverse]]).astype(np.float32)
    rows = np.concatenate([np.arange(n_warm), n_warm + groups.inverse]).astype(ROWS_DTYPE)
    return stored, bias, rows


def choose_feature_prior(tower: FeatureEncoder, warm: ItemEmbeddings, has: np.ndarray,
                         queries: dict[str, Queries], item_counts: np.ndarray
                         ) -> tuple[np.ndarray, dict]:
    """Per-warm-item feature shares ``c / (contexts + c)`` for the best prior ``c`` on the
    validation queries' warm targets; zeros unless its gain over no prior is significant: a
    paired (McNemar) z of at least ``PRIOR_Z`` over the queries one of the two gets right."""
    n = len(warm)
    with torch.no_grad():  # in blocks: text fields make one pass over every item costly
        index = torch.arange(n)
        features = torch.cat([tower.feature_vectors(index[i:i + 8192])
                              for i in range(0, n, 8192)]).numpy()
    pooled = _without_cold(queries, np.zeros(n, dtype=bool))
    has_features = np.zeros(n, dtype=bool)
    has_features[has] = True
    counts = np.asarray(item_counts[:n], dtype=np.float64)
    hits, shares = {}, {}
    for prior in PRIORS:
        share = np.where(has_features, prior / (counts + prior), 0.0) if prior else np.zeros(n)
        mixed = (1 - share)[:, None] * warm.vectors + share[:, None] * features
        mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
        scorer = ItemEmbeddings(warm.item_ids, mixed, warm.item_bias, warm.temperature,
                                warm.query)
        hits[prior] = target_ranks(scorer, pooled) < K if len(pooled) else np.zeros(0, bool)
        shares[prior] = share.astype(np.float32)
    best = max(PRIORS, key=lambda p: hits[p].sum())
    z = _paired_z(hits[best], hits[0.0])
    if len(pooled) < MIN_WARM_QUERIES or z < PRIOR_Z:
        best = 0.0
    scores = {p: float(h.mean()) if len(h) else 0.0 for p, h in hits.items()}
    logger.info("behaviour-first: feature prior %g (validation warm HR@20 %.4f, none %.4f, "
                "z %.2f)", best, scores[best], scores[0.0], z)
    return shares[best], {"prior": best, "z": round(z, 3), "queries": len(pooled),
                          "validation_hr@20": {f"{p:g}": round(v, 5) for p, v in scores.items()}}


def _paired_z(better: np.ndarray, base: np.ndarray) -> float:
    """McNemar's z for two scorers' hits on the same queries (0 when they never disagree)."""
    wins, losses = int((better & ~base).sum()), int((~better & base).sum())
    return (wins - losses) / np.sqrt(wins + losses) if wins + losses else 0.0


def pseudo_cold_folds(rows: np.ndarray, share: float, rng: np.random.Generator,
                      least: int = MIN_PSEUDO_COLD, most: int = MAX_FOLDS) -> list[np.ndarray]:
    """Disjoint random ``share``-sized sets of warm items to hold out, enough of them (up to
    ``most``) that together they hold ``least`` items: a few popular pseudo-cold items would
    otherwise decide the calibration of a small catalogue alone."""
    if len(rows) < 20:
        return []
    size = max(1, int(round(share * len(rows))))
    folds = min(most, int(np.ceil(least / size)), len(rows) // size)
    order = rng.permutation(rows)
    return [np.sort(order[f * size:(f + 1) * size]) for f in range(max(folds, 1))]


def build_tower(behaviour: ItemEncoder, plan: SidePlan, training: TrainingConfig,
                rows: np.ndarray | None = None) -> FeatureEncoder:
    """A ``FeatureEncoder`` holding the behaviour weights, warm rows id-only."""
    config = plan.spec.config
    tower = FeatureEncoder(plan.n_warm, training.dim, training.hidden,
                           [f.size for f in plan.spec.fields], plan.index, 0.0,
                           config.field_dropout, training.temperature)
    state = {k: v.detach().cpu() for k, v in behaviour.state_dict().items()}
    tower.load_state_dict({**tower.state_dict(), **state})
    tower.id_only.fill_(True)
    tower.initialise_features(tower.item_embedding.weight.detach().cpu().numpy(), rows)
    return tower


class TowerTask:
    """The tower's contrastive fit as a ``Task``: ``rows`` in shuffled batches of ``BATCH``,
    each row's target its own frozen vector among all warm ones."""

    def __init__(self, rows: np.ndarray, targets: torch.Tensor, temperature: float) -> None:
        self.rows, self.targets, self.temperature = rows, targets, temperature

    def __len__(self) -> int:
        return -(-len(self.rows) // BATCH)

    def batches(self, rng: np.random.Generator):
        order = self.rows[rng.permutation(len(self.rows))]
        for start in range(0, len(order), BATCH):
            yield torch.as_tensor(order[start:start + BATCH])

    def loss(self, tower: FeatureEncoder, batch: torch.Tensor) -> torch.Tensor:
        device = tower.item_bias.device
        if self.targets.device != device:
            self.targets = self.targets.to(device)
        return _loss(tower, self.targets, batch.to(device), self.temperature)


def train_tower(tower: FeatureEncoder, targets: torch.Tensor, rows: np.ndarray,
                held: np.ndarray, epochs: int, lr: float, temperature: float,
                rng: np.random.Generator, fixed: bool = False,
                trainer: Trainer | None = None) -> tuple[int, list[float]]:
    """Contrastive fit of the feature path to frozen ``targets``; returns (best epoch, losses).

    Only field embeddings and field weights move. With held-out rows it stops after
    ``PATIENCE`` epochs without a lower held-out loss and restores the best weights;
    ``fixed`` runs exactly ``epochs`` epochs. It is ``trainer``'s ``coldstart`` stage, not
    checkpointed (seconds of work, redone on ``--resume``).
    """
    trainer = trainer if trainer is not None else Trainer(TrainingConfig(device="cpu"),
                                                          progress=False)
    stage = Stage(COLDSTART, epochs, lr, patience=PATIENCE, checkpointed=False,
                  lr_field="features.tower_lr")
    validator = None
    if not fixed and len(held):
        held_rows = torch.as_tensor(held)

        def validator(model: FeatureEncoder) -> float:  # higher is better: minus the loss
            with torch.no_grad():
                return -float(_loss(model, targets.to(model.item_bias.device),
                                    held_rows.to(model.item_bias.device), temperature))

    result = trainer.run(tower, TowerTask(rows, targets, temperature), stage, validator,
                         rng=rng, parameters=[*tower.field_tables.parameters(),
                                              tower.field_logits])
    tower.cpu().eval()
    losses = [round(-r["validation"], 4) for r in result.history if "validation" in r]
    return result.best_epoch, losses


def _loss(tower: FeatureEncoder, targets: torch.Tensor, batch: torch.Tensor,
          temperature: float) -> torch.Tensor:
    logits = tower.feature_vectors(batch) @ targets.T / temperature
    return F.cross_entropy(logits, batch)


# -- calibration ---------------------------------------------------------------------------------
def calibration_hits(tower: FeatureEncoder, warm: ItemEmbeddings, n_warm: int,
                     held: np.ndarray, queries: dict[str, Queries]) -> tuple:
    """(held, warm hits, cold hits, warm hits without cold items, warm queries, cold queries)
    per offset on validation queries, the ``held`` items embedded by ``tower``.

    The held-out items play the part of the cold set (real cold items are left out: how many
    there will be is not known when ``itemvec embed`` adds more later).
    """
    fit_rows = np.setdiff1d(np.arange(n_warm), held)
    tower.fit_cold_bias(rows=torch.as_tensor(fit_rows))
    with torch.no_grad():
        features = tower.feature_vectors(torch.as_tensor(held))
        predicted = tower.cold_logits(features).numpy()
    cold = np.zeros(n_warm, dtype=bool)
    cold[held] = True
    vectors, bias = warm.vectors.copy(), warm.item_bias.copy()
    vectors[held], bias[held] = features.numpy(), predicted
    scorer = ItemEmbeddings(warm.item_ids, vectors, bias, warm.temperature, warm.query)
    pooled = _without_cold(queries, cold)
    warm_hits, cold_hits, base = offset_hits(scorer, pooled, cold, warm.query.popularity_weight)
    return (held, warm_hits, cold_hits, base, *_counts(pooled, cold))


def choose_offset(curves: list[tuple], max_warm_drop: float, offsets: np.ndarray = OFFSETS
                  ) -> tuple[float, dict]:
    """The offset (of ``offsets``) with the most cold-target hits whose warm HR@20 stays
    within ``max_warm_drop`` (relative) of no cold items at all, hits pooled over the folds."""
    warm_hits, cold_hits = sum(c[1] for c in curves), sum(c[2] for c in curves)
    base_hits = sum(c[3] for c in curves)
    n_warm_q, n_cold_q = sum(c[4] for c in curves), sum(c[5] for c in curves)
    warm_hr = warm_hits / max(n_warm_q, 1)
    cold_hr = cold_hits / max(n_cold_q, 1)
    base = base_hits / max(n_warm_q, 1)
    feasible = warm_hr >= (1 - max_warm_drop) * base - 1e-12
    few = n_cold_q < MIN_COLD_QUERIES or n_warm_q < MIN_WARM_QUERIES
    if few or not feasible.any():
        choice = 0  # the safe end: warm rankings as without cold items
        logger.warning("calibration: %s; cold logits get the lowest offset %.2f",
                       f"too few validation queries ({n_warm_q} warm-target, {n_cold_q} "
                       f"cold-target; need {MIN_WARM_QUERIES} and {MIN_COLD_QUERIES})" if few
                       else "every offset costs warm targets more than allowed", offsets[0])
    else:
        allowed = np.where(feasible, cold_hr, -1.0)
        choice = int(np.flatnonzero(allowed == allowed.max())[0])
    summary = (f"validation: cold-target HR@20 {cold_hr[choice]:.3f} on {n_cold_q} queries, "
               f"warm-target HR@20 {warm_hr[choice]:.4f} vs {base:.4f} without cold items")
    return float(offsets[choice]), {
        "method": "validation", "summary": summary, "warm_queries": int(n_warm_q),
        "cold_queries": int(n_cold_q), "warm_hr@20_without_cold": round(float(base), 5),
        "warm_hr@20": round(float(warm_hr[choice]), 5),
        "cold_hr@20": round(float(cold_hr[choice]), 5),
        "max_warm_drop": max_warm_drop,
        "curve": {f"{o:g}": [round(float(w), 4), round(float(c), 4)]
                  for o, w, c in zip(offsets, warm_hr, cold_hr, strict=True)},
    }


def similar_hits(tower: FeatureEncoder, warm: ItemEmbeddings, n_items: int, held: np.ndarray,
                 pairs: Queries, groups: ColdGroups | None = None) -> tuple:
    """``calibration_hits`` for ``similar``: hits@20 of i2i pairs by cosine, per offset in
    ``SIMILAR_OFFSETS`` added to cold cosines; cold = the ``held`` items (tower vectors) and
    every real cold item (rows ``n_warm..n_items``), so the catalogue's size is accounted for.

    A pair's query item must be warm and not held; its target may be anything in the model.
    Real cold items with the same features share one vector, scored once with its count: a
    catalogue of a million rows often has a few thousand distinct feature rows (``groups``;
    None: grouped by their vectors here).
    """
    n_warm = len(warm)
    query_items = np.asarray([h[-1] if len(h) else -1 for h in pairs.histories], dtype=np.int64)
    keep = (query_items >= 0) & (query_items < n_warm)
    keep[keep] &= ~np.isin(query_items[keep], held)
    query_items, targets = query_items[keep], pairs.targets[keep]
    warm_rows = np.setdiff1d(np.arange(n_warm), held)
    cold_vectors, counts, column = _cold_columns(tower, n_warm, n_items, held, groups)
    target_column = np.full(len(targets), -1, dtype=np.int64)  # the target's cold column
    is_cold = (targets >= n_warm) | np.isin(targets, held)
    target_column[is_cold] = column[targets[is_cold]]
    warm_column = np.full(n_warm, -1, dtype=np.int64)
    warm_column[warm_rows] = np.arange(len(warm_rows))
    warm_vectors = warm.vectors[warm_rows]
    warm_hits, cold_hits = np.zeros(len(SIMILAR_OFFSETS)), np.zeros(len(SIMILAR_OFFSETS))
    base = 0
    for start in range(0, len(targets), SIMILAR_BLOCK):
        part = slice(start, start + SIMILAR_BLOCK)
        items, wanted, own_column = query_items[part], targets[part], target_column[part]
        query = warm.vectors[items]
        line = np.arange(len(items))
        warm_scores, cold_scores = query @ warm_vectors.T, query @ cold_vectors.T
        own = np.where(own_column >= 0, cold_scores[line, np.maximum(own_column, 0)],
                       warm_scores[line, warm_column[np.where(own_column >= 0, items, wanted)]])
        warm_scores[line, warm_column[items]] = -np.inf
        warm_scores[line, warm_column[np.where(own_column >= 0, items, wanted)]] = -np.inf
        top_warm = _top_k(warm_scores)
        top_cold, top_counts = _top_k_counted(cold_scores, counts, own_column)
        w, c, b = _pair_hits(top_warm, top_cold, top_counts, own, own_column >= 0)
        warm_hits, cold_hits, base = warm_hits + w, cold_hits + c, base + b
    return (held, warm_hits, cold_hits, base, int((~is_cold).sum()), int(is_cold.sum()))


def _cold_columns(tower: FeatureEncoder, n_warm: int, n_items: int, held: np.ndarray,
                  groups: ColdGroups | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct cold vectors, how many items each stands for, item -> its column or -1):
    the ``held`` items one column each, then the real cold items' groups (one tower pass per
    group, not per item)."""
    pseudo = feature_vectors(tower, np.asarray(held, dtype=np.int64))
    if groups is None:
        real = feature_vectors(tower, np.arange(n_warm, n_items))
        first, inverse = unique_rows(real)
        distinct, counts = real[first], np.bincount(inverse, minlength=len(first))
    else:
        distinct, inverse, counts = feature_vectors(tower, groups.first), groups.inverse, \
            groups.counts
    column = np.full(n_items, -1, dtype=np.int64)
    column[held] = np.arange(len(held))
    column[n_warm:] = len(held) + inverse
    return (np.concatenate([pseudo, distinct]),
            np.concatenate([np.ones(len(held), np.int64), counts]), column)


def _top_k(scores: np.ndarray) -> np.ndarray:
    """The ``K`` highest scores of each row (unordered; -inf pads short rows)."""
    if scores.shape[1] <= K:
        return np.pad(scores, ((0, 0), (0, K - scores.shape[1])), constant_values=-np.inf)
    return np.partition(scores, scores.shape[1] - K, axis=1)[:, -K:]


def _top_k_counted(scores: np.ndarray, counts: np.ndarray, own: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The ``K`` best columns' scores and item counts per row, the row's target (column
    ``own``) not counting itself. Every column stands for at least one item, so more than K
    items above a score is decided by the K best columns alone."""
    width = scores.shape[1]
    if width <= K:
        top = np.broadcast_to(np.arange(width), (len(scores), width))
    else:
        top = np.argpartition(scores, width - K, axis=1)[:, -K:]
    values = np.take_along_axis(scores, top, axis=1)
    items = counts[top] - (top == own[:, None])
    pad = K - values.shape[1]
    return (np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(items, ((0, 0), (0, pad))))


def _pair_hits(top_warm: np.ndarray, top_cold: np.ndarray, cold_counts: np.ndarray,
               own: np.ndarray, cold_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Hits per offset from the K best warm and cold scores of each row (more above the
    target than K is a miss however many more); a cold target's own offset counts too."""
    shift = SIMILAR_OFFSETS[None, :, None]
    t = own[:, None, None]
    warm, cold, n = top_warm[:, None, :], top_cold[:, None, :], cold_counts[:, None, :]
    warm_above = (warm >= t).sum(axis=2)  # (rows, 1)
    warm_case = warm_above + ((cold + shift >= t) * n).sum(axis=2) < K
    cold_case = (warm >= t + shift).sum(axis=2) + ((cold >= t) * n).sum(axis=2) < K
    return (warm_case[~cold_target].sum(axis=0), cold_case[cold_target].sum(axis=0),
            int((warm_above[~cold_target, 0] < K).sum()))


def _without_cold(queries: dict[str, Queries], cold: np.ndarray) -> Queries:
    """Every task's queries over warm items pooled, cold items removed from histories (they
    have no behaviour)."""
    histories, targets = [], []
    n = len(cold)
    for q in queries.values():
        for history, target in zip(q.histories, q.targets, strict=True):
            history = history[history < n]
            history = history[~cold[history]]
            if len(history) and target < n:
                histories.append(history)
                targets.append(target)
    return Queries(histories, np.asarray(targets, dtype=np.int64))


def _counts(queries: Queries, cold: np.ndarray) -> tuple[int, int]:
    is_cold = cold[queries.targets]
    return int((~is_cold).sum()), int(is_cold.sum())


def offset_hits(scorer: ItemEmbeddings, queries: Queries, cold: np.ndarray,
                popularity_weight: float, batch: int = 512
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Hits@20 of warm and of cold targets for every offset in ``OFFSETS``, and warm hits
    with no cold item ranked at all. Scores are computed once; an offset moves cold columns."""
    shift = popularity_weight * OFFSETS
    warm_hits, cold_hits, base = np.zeros(len(OFFSETS)), np.zeros(len(OFFSETS)), 0
    for start in range(0, len(queries), batch):
        histories = queries.histories[start:start + batch]
        targets = queries.targets[start:start + batch]
        scores = np.asarray(scorer.score_histories(histories), dtype=np.float64)
        rows = np.arange(len(targets))
        own = scores[rows, targets].copy()
        for row, history in enumerate(histories):
            scores[row, history] = -np.inf
        scores[rows, targets] = -np.inf
        warm_sorted = np.sort(scores[:, ~cold], axis=1)
        cold_sorted = np.sort(scores[:, cold], axis=1)
        for row, target in enumerate(targets):
            w, c, t = warm_sorted[row], cold_sorted[row], own[row]
            if cold[target]:  # its own shift cancels against other cold items'
                rank = _above(w, t + shift) + _above(c, np.array([t]))
                cold_hits += rank < K
            else:
                above_warm = _above(w, np.array([t]))
                warm_hits += (above_warm + _above(c, t - shift)) < K
                base += int(above_warm[0] < K)
    return warm_hits, cold_hits, base


def _above(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many entries of the ascending ``ordered`` are >= each value (ties against)."""
    return len(ordered) - np.searchsorted(ordered, values, side="left")


__all__ = ["attach_cold_items", "build_tower", "choose_offset", "train_tower"]
