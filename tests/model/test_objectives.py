"""Every registered objective learns a tiny planted problem; unknown names list the known ones."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from itemvec.config import TrainingConfig
from itemvec.model.encoder import ItemEncoder
from itemvec.model.objectives import build_objective, objectives
from itemvec.util.errors import ConfigError

GROUPS, PER_GROUP = 4, 6


def planted_targets(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Items co-occur (with random strengths) only inside their group."""
    rng = np.random.default_rng(seed)
    n = GROUPS * PER_GROUP
    group = np.repeat(np.arange(GROUPS), PER_GROUP)
    counts = rng.integers(1, 10, size=(n, n)).astype(np.float32)
    counts = np.triu(counts, 1)
    counts = counts + counts.T
    counts[group[:, None] != group[None, :]] = 0
    return sp.csr_matrix(counts), group


def mean_loss(objective, encoder: ItemEncoder, seed: int = 123, repeats: int = 3) -> float:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        losses = [objective.loss(encoder, batch).item()
                  for _ in range(repeats) for batch in objective.batches(rng)]
    return float(np.mean(losses))


@pytest.mark.parametrize("name", objectives.names())
def test_objective_loss_decreases_and_groups_separate(name):
    targets, group = planted_targets()
    config = TrainingConfig(objective=name, dim=8, batch_size=32, lr=0.05, temperature=0.2,
                            negatives=3, seed=0)
    device = torch.device("cpu")
    torch.manual_seed(0)
    encoder = ItemEncoder(targets.shape[0], config.dim)
    objective = build_objective(targets, config, device)
    before = mean_loss(objective, encoder)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    rng = np.random.default_rng(0)
    for _ in range(60):
        for batch in objective.batches(rng):
            loss = objective.loss(encoder, batch)
            assert torch.isfinite(loss)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = mean_loss(objective, encoder)
    assert after < 0.8 * before, (name, before, after)
    vectors, _ = encoder.export()
    cosine = vectors @ vectors.T
    same = group[:, None] == group[None, :]
    off_diagonal = ~np.eye(len(group), dtype=bool)
    within, across = cosine[same & off_diagonal].mean(), cosine[~same].mean()
    assert within > across + 0.5, (name, within, across)


def test_unknown_objective_lists_known_names():
    targets, _ = planted_targets()
    with pytest.raises(ConfigError) as info:
        build_objective(targets, TrainingConfig(objective="triplet"), torch.device("cpu"))
    message = str(info.value)
    assert "training.objective must be one of" in message and "'triplet'" in message
    for name in objectives.names():
        assert name in message


def test_softmax_targets_are_row_distributions():
    targets, _ = planted_targets()
    objective = build_objective(targets, TrainingConfig(objective="softmax"), torch.device("cpu"))
    sums = np.asarray(objective.targets.sum(axis=1)).ravel()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_in_batch_collisions_equal_the_dense_comparison():
    from itemvec.model.objectives import in_batch_collisions

    rng = np.random.default_rng(3)
    anchors, partners = (torch.as_tensor(rng.integers(0, 40, 300)) for _ in range(2))
    partners[:30] = 7  # a very popular partner, also some anchors'
    anchors[100:110] = 7
    rows, cols = in_batch_collisions(anchors, partners)
    found = torch.zeros(300, 300, dtype=torch.bool)
    found[rows, cols] = True
    dense = (partners[None, :] == partners[:, None]) | (partners[None, :] == anchors[:, None])
    assert torch.equal(found, dense & ~torch.eye(300, dtype=torch.bool))


def test_infonce_loss_and_gradient_match_the_textbook_formula():
    """logits = cos / T + b_j - log q_j, colliding entries masked, cross-entropy on the diagonal."""
    from torch.nn import functional as F

    from itemvec.model.objectives import MASKED

    targets, _ = planted_targets()
    objective = build_objective(targets, TrainingConfig(objective="infonce", batch_size=64),
                                torch.device("cpu"))
    torch.manual_seed(0)
    encoder = ItemEncoder(targets.shape[0], 8)
    with torch.no_grad():
        encoder.item_bias.normal_()
    batch = next(iter(objective.batches(np.random.default_rng(0))))
    ours = objective.loss(encoder, batch)
    (grad_ours,) = torch.autograd.grad(ours, encoder.item_embedding.weight)
    a, p = (torch.as_tensor(x) for x in batch)
    logits = encoder(a) @ encoder(p).T / objective.temperature
    logits = logits + (encoder.item_bias[p] - objective.logq[p])[None, :]
    collide = ((p[None, :] == p[:, None]) | (p[None, :] == a[:, None])) & ~torch.eye(len(a),
                                                                                       dtype=bool)
    reference = F.cross_entropy(logits.masked_fill(collide, MASKED), torch.arange(len(a)))
    (grad_reference,) = torch.autograd.grad(reference, encoder.item_embedding.weight)
    assert collide.any()  # the planted groups are small: the batch has repeats to mask
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad_ours, grad_reference)


def test_softmax_loss_and_gradient_match_the_textbook_formula():
    """The hand-written gradient equals autograd's on -sum_j t_ij log softmax_j, anchor masked,
    rows weighted; with an accumulation factor (upstream gradient != 1) too."""
    from torch.nn import functional as F

    from itemvec.model.objectives import MASKED

    targets, _ = planted_targets()
    config = TrainingConfig(objective="softmax", batch_size=16, row_weight_power=0.5)
    objective = build_objective(targets, config, torch.device("cpu"))
    torch.manual_seed(0)
    encoder = ItemEncoder(targets.shape[0], 8)
    with torch.no_grad():
        encoder.item_bias.normal_()
    anchors = next(iter(objective.batches(np.random.default_rng(0))))
    params = (encoder.item_embedding.weight, encoder.item_bias)
    ours = objective.loss(encoder, anchors)
    grad_ours = torch.autograd.grad(ours * 0.25, params)
    index = torch.as_tensor(anchors)
    vectors = encoder.all_vectors()
    logits = vectors[index] @ vectors.T / objective.temperature + encoder.item_bias
    logits[torch.arange(len(index)), index] = MASKED
    target = torch.as_tensor(objective.targets[anchors].toarray())
    weight = objective.row_weight[index]
    per_row = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
    reference = (per_row * weight).sum() / weight.sum()
    grad_reference = torch.autograd.grad(reference * 0.25, params)
    assert not torch.allclose(weight, weight[0])  # the row weights are exercised
    torch.testing.assert_close(ours, reference)
    for got, want in zip(grad_ours, grad_reference, strict=True):
        torch.testing.assert_close(got, want)


def test_softmax_ignores_a_diagonal_target():
    """An anchor's own logit is masked, so a self co-occurrence cannot be a target."""
    targets, _ = planted_targets()
    with_diagonal = targets + sp.diags(np.full(targets.shape[0], 5.0, dtype=np.float32))
    config = TrainingConfig(objective="softmax")
    plain = build_objective(targets, config, torch.device("cpu"))
    other = build_objective(with_diagonal.tocsr(), config, torch.device("cpu"))
    assert other.targets.diagonal().sum() == 0
    np.testing.assert_allclose(other.targets.toarray(), plain.targets.toarray())
