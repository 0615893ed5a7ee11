"""History fine-tuning: the examples recommend sees, its loss, and planted groups learnt from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from itemvec.config import ConfigError, QueryConfig, TrainingConfig
from itemvec.evaluation.protocol import Queries
from itemvec.model.encoder import ItemEncoder
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.train.histories import HistoryExamples, build_examples, finetune, history_loss
from tests.evaluation.test_evaluation import make_log


def _embeddings(encoder: ItemEncoder, query: QueryConfig | None = None) -> ItemEmbeddings:
    vectors, bias = encoder.export()
    return ItemEmbeddings([f"i{k}" for k in range(encoder.n_items)], vectors, bias, 0.2,
                          query or QueryConfig(recency_half_life=0.0))


def test_session_examples_are_previous_items_and_skip_repeated_targets():
    log = make_log([[0, 1, 2], [3, 1, 3]], n_items=4, ordered=True)
    emb = _embeddings(ItemEncoder(4, 8), QueryConfig(recency_half_life=1.0))
    ex = build_examples(log, emb)
    assert ex.targets.tolist() == [1, 2, 1]  # [3, 1] -> 3 is skipped: 3 is in its history
    assert ex.items.tolist() == [[0, 4], [0, 1], [3, 4]]  # padded with n_items
    np.testing.assert_allclose(ex.weights[1].numpy(), emb.history_weights(2))
    assert ex.weights[0, 1] == 0 and ex.weights[2, 1] == 0


def test_basket_examples_hold_out_each_item_against_the_rest():
    log = make_log([[0, 1, 2]], n_items=3, ordered=False)
    ex = build_examples(log, _embeddings(ItemEncoder(3, 8)))
    assert ex.targets.tolist() == [0, 1, 2]
    assert [sorted(r) for r in ex.items.tolist()] == [[1, 2], [0, 2], [0, 1]]


def test_loss_is_recommend_cross_entropy_with_history_items_masked():
    torch.manual_seed(0)
    encoder = ItemEncoder(6, 4)
    emb = _embeddings(encoder)
    weights = torch.tensor([emb.history_weights(2).tolist(), [*emb.history_weights(1), 0.0]])
    batch = HistoryExamples(torch.tensor([[0, 1], [2, 6]]), weights, torch.tensor([3, 5]))
    loss = history_loss(encoder, batch, 0.2, 1.0).detach()
    scores = emb.score_histories([np.array([0, 1]), np.array([2])])
    scores[0, [0, 1]] = -np.inf
    scores[1, 2] = -np.inf
    expected = F.cross_entropy(torch.as_tensor(scores), torch.tensor([3, 5]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def _groups(n_groups: int, size: int, n_baskets: int, seed: int) -> tuple:
    """Baskets of 4 items from one planted group each."""
    rng = np.random.default_rng(seed)
    baskets = [list(g * size + rng.choice(size, 4, replace=False))
               for g in rng.integers(n_groups, size=n_baskets)]
    return make_log(baskets, n_groups * size, ordered=False), baskets


def _queries(baskets) -> dict[str, Queries]:
    histories = [np.array(b[:-1]) for b in baskets]
    targets = np.array([b[-1] for b in baskets])
    return {"i2i": Queries([h[:1] for h in histories], targets), "s2i": Queries(histories, targets)}


def test_finetuning_learns_planted_groups_from_a_random_start():
    torch.manual_seed(0)
    n_groups, size = 8, 10  # 80 items: a random top 20 finds the target 25% of the time
    log, _ = _groups(n_groups, size, 600, seed=0)
    _, held_out = _groups(n_groups, size, 200, seed=1)
    encoder = ItemEncoder(n_groups * size, 16)
    emb = _embeddings(encoder)
    report = finetune(encoder, emb, build_examples(log, emb), _queries(held_out), epochs=8,
                      lr=0.05)
    assert report["start"] < 0.45 and report["best"] > 0.95 and report["best_epoch"] > 0
    vectors, _ = encoder.export()
    groups = np.arange(n_groups * size) // size
    same = (vectors @ vectors.T)[groups[:, None] == groups[None, :]].mean()
    other = (vectors @ vectors.T)[groups[:, None] != groups[None, :]].mean()
    assert same > other + 0.5


def test_finetuning_keeps_the_start_when_validation_does_not_improve():
    torch.manual_seed(0)
    log, baskets = _groups(4, 10, 100, seed=0)
    encoder = ItemEncoder(40, 8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    emb = _embeddings(encoder)
    report = finetune(encoder, emb, build_examples(log, emb), _queries(baskets), epochs=3,
                      lr=1e-9)
    assert report["best_epoch"] == 0 and report["epochs_run"] == 2  # patience 2
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name])


def test_config_rejects_negative_history_epochs():
    with pytest.raises(ConfigError, match="training.history_epochs must be >= 0, got -1"):
        TrainingConfig(history_epochs=-1)


def test_auto_fine_tunes_only_logs_up_to_two_million_events():
    from itemvec.train.pipeline import history_epochs

    assert history_epochs(TrainingConfig(), 2_000_000) == 10
    assert history_epochs(TrainingConfig(), 2_000_001) == 0
    assert history_epochs(TrainingConfig(history_epochs=3), 50_000_000) == 3
