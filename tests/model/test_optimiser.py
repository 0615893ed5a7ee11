"""Lazy Adam: equals Adam on dense gradients, touches only a batch's rows on sparse ones, learns
the planted groups, and resumes bit-identically from a checkpoint."""

from __future__ import annotations

import pytest
import torch

from itemvec.config import TrainingConfig
from itemvec.model.optimiser import LazyAdam, build_optimiser, use_sparse_updates
from itemvec.train.checkpoint import CheckpointManager
from itemvec.train.pipeline import train_on_log
from itemvec.train.trainer import Trainer
from itemvec.util.errors import ConfigError

OBJECTIVE_PURITY = 0.6  # as in test_training: random vectors score ~0.17 on the 6-category shop


def _table(sparse: bool, seed: int = 0) -> torch.nn.Embedding:
    torch.manual_seed(seed)
    return torch.nn.Embedding(10, 3, sparse=sparse)


def _run(table: torch.nn.Embedding, optimiser, batches: list[list[int]]) -> None:
    for rows in batches:
        optimiser.zero_grad()
        index = torch.tensor(rows)
        target = torch.arange(len(rows) * 3, dtype=torch.float32).view(len(rows), 3) / 7
        ((table(index) - target) ** 2).sum().backward()
        optimiser.step()


def test_dense_gradients_get_exactly_adams_update():
    batches = [[0, 1, 2], [3, 4, 0], [5, 5, 9]] * 3
    ours, theirs = _table(False), _table(False)
    _run(ours, LazyAdam(ours.parameters(), lr=0.05, weight_decay=0.01), batches)
    _run(theirs, torch.optim.Adam(theirs.parameters(), lr=0.05, weight_decay=0.01), batches)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)


def test_rows_touched_every_step_match_adam():
    """While the same rows get every gradient, lazy and dense Adam agree on every row."""
    batches = [[1, 4, 4, 7]] * 5  # a repeated row: its two gradients are summed
    lazy, dense = _table(True), _table(False)
    _run(lazy, LazyAdam(lazy.parameters(), lr=0.1), batches)
    _run(dense, torch.optim.Adam(dense.parameters(), lr=0.1), batches)
    torch.testing.assert_close(lazy.weight, dense.weight, rtol=1e-6, atol=1e-7)


def test_rows_left_out_of_a_batch_stay_where_they_are():
    lazy, start = _table(True), _table(False).weight.detach().clone()
    optimiser = LazyAdam(lazy.parameters(), lr=0.1)
    _run(lazy, optimiser, [[0, 1]])
    after_first = lazy.weight.detach().clone()
    _run(lazy, optimiser, [[2]])
    assert torch.equal(lazy.weight[[0, 1]], after_first[[0, 1]])  # not in batch 2: untouched
    assert torch.equal(lazy.weight[3:], start[3:])  # never in a batch
    assert not torch.equal(lazy.weight[2], start[2])
    dense = _table(False)
    _run(dense, torch.optim.Adam(dense.parameters(), lr=0.1), [[0, 1], [2]])
    torch.testing.assert_close(dense.weight[2], lazy.weight[2])  # first step: same for both
    assert not torch.equal(dense.weight[[0, 1]], after_first[[0, 1]])  # momentum moves them


def test_sparse_updates_switch_on_for_sampled_objectives_on_big_catalogues():
    default = TrainingConfig()
    assert not use_sparse_updates(default, 20_000)  # full softmax
    assert use_sparse_updates(default, 60_000)  # auto -> infonce
    assert not use_sparse_updates(default.replace(objective="infonce"), 20_000)
    assert use_sparse_updates(default.replace(sparse_updates="on"), 100)
    assert not use_sparse_updates(default.replace(sparse_updates="off"), 10**6)
    with pytest.raises(ConfigError, match="training.sparse_updates"):
        TrainingConfig(sparse_updates="maybe")


def test_build_optimiser_makes_the_id_table_send_sparse_gradients():
    from itemvec.model.encoder import ItemEncoder

    encoder = ItemEncoder(50, 8)
    optimiser = build_optimiser(encoder, TrainingConfig().replace(sparse_updates="on"), True)
    encoder(torch.tensor([3, 7])).sum().backward()
    assert isinstance(optimiser, LazyAdam) and encoder.item_embedding.weight.grad.is_sparse
    optimiser.step()


@pytest.mark.parametrize("objective", ["infonce", "sgns"])
def test_lazy_updates_learn_the_planted_groups(shop_log, shop_config, categories, purity,
                                               objective):
    config = shop_config.replace(training=shop_config.training.replace(objective=objective,
                                                   init="random", epochs=6,
                                                   sparse_updates="on"))
    model = train_on_log(shop_log, config, progress=False)
    assert purity(model.embeddings, categories, model.item_counts) >= OBJECTIVE_PURITY


def test_resume_with_lazy_updates_is_bit_identical(tmp_path):
    import scipy.sparse as sp

    counts = sp.random(60, 60, density=0.2, random_state=1, format="csr") * 10
    matrix = (counts + counts.T).tocsr()
    config = TrainingConfig(device="cpu", objective="infonce", sparse_updates="on", epochs=4,
                            dim=8, hidden=4, batch_size=32, checkpoint_every=0)
    whole = Trainer(config, progress=False).fit(matrix)

    def stop(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, progress=False, callbacks=[stop], checkpoint=manager).fit(matrix)
    resumed = Trainer(config, progress=False, checkpoint=CheckpointManager(tmp_path / "ck"),
                      resume=True).fit(matrix)
    for key, value in whole.encoder.state_dict().items():
        assert torch.equal(value, resumed.encoder.state_dict()[key]), key
