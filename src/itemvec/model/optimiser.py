"""Optimisers for the encoder: plain Adam, or lazy (row-sparse) Adam for huge catalogues.

With a million items a sampled batch of 4,096 pairs touches at most 8,192 rows of the id
table, yet dense Adam rewrites the whole table and both of its moment tables every step: at
789k items that was 259 s for one 2M-pair epoch on 2 cores (benchmarks/scale.md). Lazy Adam
(as in TensorFlow's LazyAdam and ``torch.optim.SparseAdam``) updates only the rows a batch
touched, and their moments; rows left out keep theirs. Dense gradients (popularity logits,
the MLP) get the ordinary Adam update in the same optimiser, so one state dict - and one
checkpoint format - covers both.
"""

from __future__ import annotations

import logging

import torch

from itemvec.config import TrainingConfig
from itemvec.model.encoder import ItemEncoder
from itemvec.model.objectives import AUTO_SOFTMAX_MAX_ITEMS, resolve_objective

logger = logging.getLogger(__name__)
SAMPLED = ("infonce", "sgns")


def use_sparse_updates(config: TrainingConfig, n_items: int) -> bool:
    """'auto': lazy updates for sampled objectives above the full-softmax size (50k items)."""
    if config.sparse_updates != "auto":
        return config.sparse_updates == "on"
    sampled = resolve_objective(config.objective, n_items) in SAMPLED
    return sampled and n_items > AUTO_SOFTMAX_MAX_ITEMS


def build_optimiser(encoder: ItemEncoder, config: TrainingConfig,
                    sparse: bool) -> torch.optim.Optimizer:
    """Adam over every parameter; with ``sparse`` the id table sends row-sparse gradients."""
    encoder.item_embedding.sparse = sparse
    return adam(encoder.parameters(), config.lr, config.weight_decay, sparse)


def adam(parameters, lr: float, weight_decay: float = 0.0,
         sparse: bool = False) -> torch.optim.Optimizer:
    """Adam over ``parameters``; lazy (``LazyAdam``) when gradients come row-sparse."""
    if not sparse:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    logger.info("lazy Adam: only the id rows of each batch are updated")
    return LazyAdam(parameters, lr=lr, weight_decay=weight_decay)


class LazyAdam(torch.optim.Optimizer):
    """Adam that applies sparse gradients to the touched rows only (dense ones as usual).

    The step counter (and so the bias correction) is per tensor, as in ``SparseAdam``; weight
    decay is L2 added to the gradient, as in ``torch.optim.Adam``, and for a sparse gradient
    only on the touched rows.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                if param.grad.is_sparse:
                    _sparse_step(param, state, group)
                else:
                    _dense_step(param, state, group)
        return loss


def _scales(state: dict, group: dict) -> tuple[float, float]:
    """(step size, sqrt of the second-moment bias correction) at this step."""
    beta1, beta2 = group["betas"]
    step = float(state["step"])
    return group["lr"] / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5


def _dense_step(param: torch.Tensor, state: dict, group: dict) -> None:
    beta1, beta2 = group["betas"]
    grad = param.grad
    if group["weight_decay"]:
        grad = grad.add(param, alpha=group["weight_decay"])
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step_size, correction = _scales(state, group)
    denom = (state["exp_avg_sq"].sqrt() / correction).add_(group["eps"])
    param.addcdiv_(state["exp_avg"], denom, value=-step_size)


def _sparse_step(param: torch.Tensor, state: dict, group: dict) -> None:
    beta1, beta2 = group["betas"]
    grad = param.grad.coalesce()  # one entry per touched row, repeated rows summed
    rows, values = grad.indices()[0], grad.values()
    if group["weight_decay"]:
        values = values + group["weight_decay"] * param[rows]
    exp_avg = state["exp_avg"][rows].lerp_(values, 1 - beta1)
    exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"][rows] = exp_avg
    state["exp_avg_sq"][rows] = exp_avg_sq
    step_size, correction = _scales(state, group)
    denom = (exp_avg_sq.sqrt() / correction).add_(group["eps"])
    param.index_add_(0, rows, exp_avg / denom, alpha=-step_size)
