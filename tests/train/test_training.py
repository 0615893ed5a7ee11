"""Training on planted structure: items of the same hidden category end up close.

The synthetic shop has 10 hidden categories, so a random model puts about 10% of an item's
neighbours in its category; trained models reach 0.95 (softmax, spectral start) and 0.75-0.8
(each objective from a random start, 6 epochs). Thresholds sit well between the two.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from itemvec.config import TrainingConfig
from itemvec.model.spectral import spectral_vectors
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.train.pipeline import train_on_log
from itemvec.train.trainer import Trainer, TrainingDivergedError

DEFAULT_PURITY = 0.8
OBJECTIVE_PURITY = 0.6
CHANCE_CEILING = 0.3


def test_default_model_puts_same_category_items_together(trained, categories, purity):
    score = purity(trained.embeddings, categories, trained.item_counts)
    assert score >= DEFAULT_PURITY, score


def test_random_vectors_fail_the_same_check(trained, categories, purity):
    """The metric can fail: unit random vectors score near chance (1 in 10 categories)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=trained.embeddings.vectors.shape)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    broken = ItemEmbeddings(trained.embeddings.item_ids, vectors)
    assert purity(broken, categories, trained.item_counts) < CHANCE_CEILING


def test_stats_describe_the_run(trained, shop_log):
    stats = trained.stats
    assert stats["items"] == trained.embeddings.vectors.shape[0] <= shop_log.n_items
    assert stats["context_kind"] == "session"
    assert 0 <= stats["best_epoch"] <= stats["epochs_run"] <= 40
    assert 0 < stats["validation_hr@20"] <= 1
    # epoch 0 scores the spectral start; then one record per trained epoch
    assert [r["epoch"] for r in stats["history"]] == list(range(stats["epochs_run"] + 1))
    assert "loss" not in stats["history"][0] and "loss" in stats["history"][-1]
    np.testing.assert_allclose(np.linalg.norm(trained.embeddings.vectors, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("objective", ["softmax", "infonce", "sgns"])
def test_each_objective_learns_from_a_random_start(shop_log, shop_config, categories, purity,
                                                   objective):
    config = shop_config.replace(training=shop_config.training.replace(objective=objective,
                                                   init="random", epochs=6))
    model = train_on_log(shop_log, config, progress=False)
    score = purity(model.embeddings, categories, model.item_counts)
    assert score >= OBJECTIVE_PURITY, (objective, score)


def test_same_seed_gives_identical_embeddings(shop_log, shop_config):
    config = shop_config.replace(training=shop_config.training.replace(epochs=3))
    first = train_on_log(shop_log, config, progress=False).embeddings
    second = train_on_log(shop_log, config, progress=False).embeddings
    np.testing.assert_array_equal(first.item_ids, second.item_ids)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    np.testing.assert_array_equal(first.item_bias, second.item_bias)
    other = config.replace(training=config.training.replace(seed=1))
    third = train_on_log(shop_log, other, progress=False).embeddings
    assert not np.array_equal(first.vectors, third.vectors)


def _block_targets() -> sp.csr_matrix:
    block = np.ones((5, 5), dtype=np.float32) - np.eye(5, dtype=np.float32)
    return sp.csr_matrix(sp.block_diag([block, block]))


def test_spectral_start_already_separates_blocks():
    vectors = spectral_vectors(_block_targets(), dim=2, seed=0)  # rank 2: one axis per block
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    assert cosine[0, 1] > 0.99 and abs(cosine[0, 7]) < 0.01


def test_early_stopping_restores_the_best_epoch():
    scores = iter([0.1, 0.5, 0.9, 0.4, 0.3, 0.2, 0.1])  # the start first, then epochs 1, 2, ...
    snapshots = []

    def validator(encoder) -> float:
        snapshots.append(encoder.export()[0].copy())
        return next(scores)

    config = TrainingConfig(epochs=20, eval_every=1, patience=2, patience_batches=0, dim=4,
                            device="cpu", lr=0.05)
    result = Trainer(config, validator, progress=False).fit(_block_targets())
    assert result.best_epoch == 2 and result.best_score == 0.9
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3, 4]  # 3, 4 did not improve: stop
    np.testing.assert_allclose(result.encoder.export()[0], snapshots[2], rtol=1e-6)


def test_patience_counts_batches_since_the_best():
    """One batch per epoch (10 anchors, batch 512): 6 batches of patience are 6 epochs; with
    batch 2 (5 batches an epoch) the same patience is spent after 2 epochs."""
    def run(batch_size: int) -> list[int]:
        scores = iter([0.1, 0.9] + [0.5] * 30)
        config = TrainingConfig(epochs=30, eval_every=1, patience=1, patience_batches=6, dim=4,
                                device="cpu", batch_size=batch_size)
        result = Trainer(config, lambda encoder: next(scores), progress=False).fit(
            _block_targets())
        assert result.best_epoch == 1
        return [r["epoch"] for r in result.history]

    assert run(512) == list(range(8))  # best at 1, stop at 1 + 6
    assert run(2) == [0, 1, 2, 3]  # best at 1, stop at 1 + 2 (10 batches >= 6)


def test_a_spectral_start_no_epoch_beats_is_kept():
    scores = iter([0.9] + [0.2] * 10)  # the start scores best, every epoch worse
    config = TrainingConfig(epochs=5, dim=4, device="cpu", lr=0.5)
    trainer = Trainer(config, lambda encoder: next(scores), progress=False)
    start = trainer.build_encoder(_block_targets()).export()[0]
    result = trainer.fit(_block_targets())
    assert result.best_epoch == 0 and result.best_score == 0.9
    assert result.history[-1]["epoch"] >= 1  # it trained, found nothing better, went back
    np.testing.assert_allclose(result.encoder.export()[0], start, rtol=1e-6)


def test_diverging_loss_raises_a_user_error(monkeypatch):
    class NaNObjective:
        def __len__(self):
            return 1

        def batches(self, rng):
            yield None

        def loss(self, encoder, batch):
            return encoder.item_bias.sum() * torch.tensor(float("nan"))

    monkeypatch.setattr("itemvec.train.trainer.build_objective", lambda *a, **k: NaNObjective())
    config = TrainingConfig(epochs=2, dim=4, device="cpu")
    with pytest.raises(TrainingDivergedError, match="lower training.lr"):
        Trainer(config, progress=False).fit(_block_targets())


def test_bf16_mixed_precision_learns_from_a_random_start(shop_log, shop_config, categories,
                                                         purity):
    """Autocast bf16 (CPU here; the same path runs on CUDA) still learns the planted groups."""
    config = shop_config.replace(training=shop_config.training.replace(init="random", epochs=6,
                                                   precision="bf16"))
    model = train_on_log(shop_log, config, progress=False)
    assert purity(model.embeddings, categories, model.item_counts) >= OBJECTIVE_PURITY
    assert model.embeddings.vectors.dtype == np.float32


def test_fp16_needs_cuda_and_bad_settings_name_the_field():
    from itemvec.util.errors import ConfigError, ItemvecError

    with pytest.raises(ItemvecError, match="training.precision fp16 needs a CUDA device"):
        Trainer(TrainingConfig(precision="fp16", device="cpu"))
    with pytest.raises(ConfigError, match="training.precision"):
        TrainingConfig(precision="fp8")
    with pytest.raises(ConfigError, match="training.accumulate must be >= 1"):
        TrainingConfig(accumulate=0)


@pytest.mark.parametrize("accumulate", [1, 3, 100])
def test_gradient_accumulation_steps_once_per_group(accumulate):
    """ceil(batches / accumulate) optimiser steps per epoch, the remainder stepped at the end."""
    targets = _block_targets()
    config = TrainingConfig(dim=8, epochs=2, batch_size=4, device="cpu", accumulate=accumulate)

    class Counting(Trainer):
        steps = 0

        def after_backward(self, encoder) -> None:  # called once before each optimiser step
            Counting.steps += 1

    result = Counting(config, progress=False).fit(targets)
    batches = -(-int((np.diff(targets.indptr) > 0).sum()) // 4)
    assert Counting.steps == 2 * -(-batches // accumulate)
    assert np.isfinite(result.encoder.export()[0]).all()


def test_accumulated_gradient_is_the_mean_of_the_group(monkeypatch):
    """Two batches accumulated give the same first step as their averaged loss would."""
    targets = _block_targets()
    base = TrainingConfig(dim=8, epochs=1, batch_size=4, device="cpu", lr=0.05)
    grads = {}

    class Capture(Trainer):
        def after_backward(self, encoder) -> None:
            grads.setdefault(self.config.accumulate, encoder.item_embedding.weight.grad.clone())

    Capture(base.replace(accumulate=2), progress=False).fit(targets)
    # the same two batches by hand: same seed -> same spectral start and the same row order
    trainer = Trainer(base, progress=False)
    encoder = trainer.build_encoder(targets)
    from itemvec.model.objectives import build_objective

    objective = build_objective(targets, base, torch.device("cpu"))
    batches = list(objective.batches(np.random.default_rng(base.seed)))[:2]
    loss = sum(objective.loss(encoder, b) for b in batches) / 2
    loss.backward()
    torch.testing.assert_close(grads[2], encoder.item_embedding.weight.grad)


@pytest.mark.parametrize("objective", ["infonce", "sgns"])
def test_pairs_per_epoch_bounds_a_sampled_epoch(objective):
    from itemvec.model.objectives import build_objective
    from itemvec.util.errors import ConfigError

    targets = _block_targets()
    full = build_objective(targets, TrainingConfig(objective=objective, batch_size=4),
                           torch.device("cpu"))
    capped = build_objective(targets, TrainingConfig(objective=objective, batch_size=4,
                                                     pairs_per_epoch=12), torch.device("cpu"))
    assert len(full) == targets.nnz // 4 > 3 and len(capped) == 3
    assert len(list(capped.batches(np.random.default_rng(0)))) == 3
    with pytest.raises(ConfigError, match="training.pairs_per_epoch must be >= 1"):
        TrainingConfig(pairs_per_epoch=0)


def test_default_sampled_epoch_is_at_most_the_auto_cap(monkeypatch):
    from itemvec.model import objectives

    monkeypatch.setattr(objectives, "AUTO_MAX_PAIRS", 8)
    targets = _block_targets()
    assert targets.nnz > 8
    capped = objectives.build_objective(targets, TrainingConfig(objective="infonce", batch_size=4),
                                        torch.device("cpu"))
    asked = objectives.build_objective(targets, TrainingConfig(
        objective="infonce", batch_size=4, pairs_per_epoch=targets.nnz), torch.device("cpu"))
    assert len(capped) == 2 and len(asked) == targets.nnz // 4
