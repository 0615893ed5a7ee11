"""Self-supervised objectives: make cosine similarity of item vectors explain co-occurrence.

All objectives score a pair as ``cos(f_i, f_j) / temperature + b_j`` where ``b_j`` is a learned
popularity logit, and differ in how they normalise:

- ``softmax``: full softmax over all items for each anchor, with the anchor's co-occurrence row
  (counts ** target_power, normalised) as the soft target. Exact, no sampling noise; O(items^2 d)
  per epoch, the right choice up to ~10^5 items.
- ``infonce``: sampled softmax with in-batch negatives and logQ correction (Yi et al. 2019), so
  popular partners are not over-penalised; scales to any vocabulary.
- ``sgns``: skip-gram negative sampling (item2vec); its optimum is shifted PMI (Levy & Goldberg).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from itemvec.config import TrainingConfig
from itemvec.model.encoder import ItemEncoder
from itemvec.model.sampling import PairSampler, RowBatches, unigram_negatives
from itemvec.util.errors import ConfigError
from itemvec.util.registry import Registry

objectives: Registry = Registry("objective")
MASKED = -1e9
FULL_SOFTMAX_MAX_ITEMS = 200_000


class Objective(Protocol):
    def __len__(self) -> int: ...
    def batches(self, rng: np.random.Generator) -> Iterator[Any]: ...
    def loss(self, encoder: ItemEncoder, batch: Any) -> torch.Tensor: ...


AUTO_SOFTMAX_MAX_ITEMS = 50_000


def resolve_objective(name: str, n_items: int) -> str:
    """'auto': exact full softmax while it is cheap (<= 50k items), sampled softmax beyond."""
    if name != "auto":
        return name
    return "softmax" if n_items <= AUTO_SOFTMAX_MAX_ITEMS else "infonce"


def build_objective(targets: sp.csr_matrix, config: TrainingConfig,
                    device: torch.device) -> Objective:
    name = resolve_objective(config.objective, targets.shape[0])
    return objectives.get(name)(targets, config, device)


AUTO_MAX_PAIRS = 10_000_000


def _pairs_per_epoch(targets: sp.csr_matrix, config: TrainingConfig) -> int:
    """One draw per non-zero, at most 10M (``training.pairs_per_epoch`` sets it): 100M events
    over 1M items give 189M non-zeros, and an epoch is also the spacing of validations."""
    return max(config.pairs_per_epoch or min(targets.nnz, AUTO_MAX_PAIRS), 1)


def _powered(targets: sp.csr_matrix, power: float) -> sp.csr_matrix:
    out = targets.tocsr().astype(np.float64, copy=True)
    out.data = np.power(out.data, power)
    return out


@objectives.register("softmax")
class FullSoftmax:
    """Cross-entropy between each anchor's co-occurrence row and a softmax over all items."""

    def __init__(self, targets: sp.csr_matrix, config: TrainingConfig, device: torch.device):
        n_items = targets.shape[0]
        if n_items > FULL_SOFTMAX_MAX_ITEMS:
            raise ConfigError(f"training.objective 'softmax' scores all {n_items} items per anchor; "
                              f"above {FULL_SOFTMAX_MAX_ITEMS} use --objective infonce")
        powered = _powered(targets, config.target_power)
        if powered.diagonal().any():  # an anchor is never its own target: its logit is masked
            powered.setdiag(0)
            powered.eliminate_zeros()
        mass = np.asarray(powered.sum(axis=1)).ravel()
        self.targets = sp.diags(1.0 / np.maximum(mass, 1e-12)) @ powered
        self.targets = self.targets.tocsr().astype(np.float32)
        row_weight = np.power(np.asarray(targets.sum(axis=1)).ravel(), config.row_weight_power)
        self.row_weight = torch.as_tensor(row_weight / row_weight[mass > 0].mean(),
                                          dtype=torch.float32, device=device)
        self.rows = RowBatches(targets, config.batch_size)
        self.temperature = config.temperature
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return self.rows.epoch(rng)

    def loss(self, encoder: ItemEncoder, anchors: np.ndarray) -> torch.Tensor:
        vectors = encoder.all_vectors()
        index = torch.as_tensor(anchors, device=self.device)
        weight = self.row_weight[index]
        if torch.is_autocast_enabled(self.device.type):  # bf16/fp16: autograd's own kernels
            return self._autograd_loss(vectors, encoder.item_bias, index, anchors, weight)
        rows = self.targets[anchors].tocoo()
        sparse = tuple(torch.as_tensor(x, device=self.device) for x in
                       (rows.row.astype(np.int64), rows.col.astype(np.int64), rows.data))
        return SoftTargetCrossEntropy.apply(vectors[index], vectors, encoder.item_bias, index,
                                            *sparse, weight / weight.sum(), self.temperature)

    def _autograd_loss(self, vectors, bias, index, anchors, weight) -> torch.Tensor:
        logits = vectors[index] @ vectors.T / self.temperature + bias
        logits[torch.arange(len(index), device=self.device), index] = MASKED
        target = torch.as_tensor(self.targets[anchors].toarray(), device=self.device)
        per_row = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        return (per_row * weight).sum() / weight.sum()


class SoftTargetCrossEntropy(torch.autograd.Function):
    """Weighted cross-entropy of a full softmax against sparse soft targets, gradient by hand.

    The B x items logits dominate a full-softmax step; autograd's chain (divide, add, mask,
    log_softmax, multiply by a densified target) walks that matrix ~20 times. The closed form
    d loss / d logit = w_r (softmax_rj - t_rj) needs about six passes and keeps one B x items
    buffer, so a step is ~2.7x faster (20k items, batch 512), with the same loss and gradient.
    Targets must sum to one per row and miss the diagonal (the anchor itself is masked).
    """

    @staticmethod
    def forward(ctx, anchor, vectors, bias, index, rows, cols, values, scale, temperature):
        scaled = anchor / temperature
        logits = torch.addmm(bias, scaled, vectors.T)
        width = logits.shape[1]
        flat = rows * width + cols
        picked = torch.zeros(len(index), dtype=logits.dtype, device=logits.device)
        picked.index_add_(0, rows, values * logits.view(-1).take(flat))
        own = torch.arange(len(index), device=logits.device) * width + index
        logits.view(-1)[own] = MASKED
        top = logits.amax(dim=1)
        probs = logits.sub_(top[:, None]).exp_()
        total = probs.sum(dim=1)
        loss = ((top + total.log() - picked) * scale).sum()
        grad = probs.mul_((scale / total)[:, None])  # d loss / d logits, in place
        grad.view(-1).index_add_(0, flat, -(values * scale[rows]))
        ctx.save_for_backward(scaled, vectors, grad)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx, upstream):
        scaled, vectors, grad = ctx.saved_tensors
        return ((grad @ vectors) * (upstream / ctx.temperature), (grad.T @ scaled) * upstream,
                grad.sum(dim=0) * upstream, None, None, None, None, None, None)


@objectives.register("infonce")
class SampledSoftmax:
    """In-batch sampled softmax over (anchor, partner) pairs with logQ popularity correction."""

    def __init__(self, targets: sp.csr_matrix, config: TrainingConfig, device: torch.device):
        self.pairs = PairSampler(targets, config.batch_size, _pairs_per_epoch(targets, config),
                                 power=config.target_power)
        logq = np.log(np.maximum(self.pairs.partner_probability, 1e-12))
        self.logq = torch.as_tensor(logq, dtype=torch.float32, device=device)
        self.temperature = config.temperature
        self.device = device

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.pairs.epoch(rng)

    def loss(self, encoder: ItemEncoder, batch: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
        anchors, partners = (torch.as_tensor(x, device=self.device) for x in batch)
        # B x B logits dominate a step on big catalogues: the temperature is folded into the
        # B x d anchors and the partner logits into the product (one pass, not three), and only
        # the few colliding entries are masked, in place.
        offset = encoder.item_bias[partners] - self.logq[partners]
        logits = torch.addmm(offset[None, :], encoder(anchors) / self.temperature,
                             encoder(partners).T)
        logits.index_put_(in_batch_collisions(anchors, partners),
                          torch.tensor(MASKED, dtype=logits.dtype, device=self.device))
        labels = torch.arange(len(anchors), device=self.device)
        return F.cross_entropy(logits, labels)


def in_batch_collisions(anchors: torch.Tensor,
                        partners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries (i, j), i != j, where partner j is anchor i's own partner or the anchor itself:
    not negatives for row i. Found through groups of equal partners, never a B x B comparison."""
    values, group, sizes = torch.unique(partners, return_inverse=True, return_counts=True)
    members = torch.argsort(group, stable=True)  # partner positions, grouped by value
    starts = torch.cumsum(sizes, 0) - sizes
    at = torch.searchsorted(values, anchors).clamp(max=len(values) - 1)
    rows, cols = [], []
    for wanted in (group, torch.where(values[at] == anchors, at, -1)):
        row = torch.nonzero(wanted >= 0).squeeze(1)
        count = sizes[wanted[row]]
        first = torch.repeat_interleave(starts[wanted[row]] - torch.cumsum(count, 0) + count, count)
        rows.append(torch.repeat_interleave(row, count))
        cols.append(members[first + torch.arange(int(count.sum()), device=anchors.device)])
    rows, cols = torch.cat(rows), torch.cat(cols)
    keep = rows != cols
    return rows[keep], cols[keep]


@objectives.register("sgns")
class NegativeSampling:
    """Skip-gram with negative sampling over cosine / temperature (item2vec, prod2vec)."""

    def __init__(self, targets: sp.csr_matrix, config: TrainingConfig, device: torch.device):
        self.pairs = PairSampler(targets, config.batch_size, _pairs_per_epoch(targets, config),
                                 power=config.target_power)
        item_mass = np.asarray(targets.sum(axis=0)).ravel()
        self.noise = unigram_negatives(item_mass, config.negative_power)
        self.negatives = config.negatives
        self.temperature = config.temperature
        self.device = device
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, ...]]:
        for anchors, partners in self.pairs.epoch(rng):
            noise = self.noise.sample(rng, len(anchors) * self.negatives)
            yield anchors, partners, noise.reshape(len(anchors), self.negatives)

    def loss(self, encoder: ItemEncoder, batch: tuple[np.ndarray, ...]) -> torch.Tensor:
        anchors, partners, noise = (torch.as_tensor(x, device=self.device) for x in batch)
        a = encoder(anchors)
        positive = (a * encoder(partners)).sum(-1) / self.temperature + encoder.item_bias[partners]
        negative = torch.einsum("bd,bkd->bk", a, encoder(noise)) / self.temperature
        negative = negative + encoder.item_bias[noise]
        return F.softplus(-positive).mean() + F.softplus(negative).sum(dim=1).mean()
