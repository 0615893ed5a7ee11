"""The item encoder f(item) -> unit vector in R^d.

An id embedding table, optionally plus side-feature embeddings, followed by a residual MLP
(zero-initialised, so a spectral initialisation passes through unchanged at step 0) and L2
normalisation: cosine similarity is then a plain dot product.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ItemEncoder(nn.Module):
    """Maps item indices to L2-normalised vectors; also holds a per-item popularity logit."""

    def __init__(self, n_items: int, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.n_items, self.dim, self.hidden = n_items, dim, hidden
        self.item_embedding = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        self.mlp = _residual_mlp(dim, hidden) if hidden > 0 else None
        # Learned log-popularity: lets cosines explain association, not raw frequency.
        self.item_bias = nn.Parameter(torch.zeros(n_items))

    def initialise(self, vectors: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Start from given vectors (e.g. the spectral initialisation)."""
        with torch.no_grad():
            self.item_embedding.weight.copy_(torch.as_tensor(vectors, dtype=torch.float32))
            if bias is not None:
                self.item_bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x = self.item_embedding(items)
        if self.mlp is not None:
            x = x + self.mlp(x)
        return F.normalize(x, dim=-1)

    def all_vectors(self) -> torch.Tensor:
        index = torch.arange(self.n_items, device=self.item_embedding.weight.device)
        return self.forward(index)

    @torch.no_grad()
    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors, popularity logits) as float32 numpy arrays."""
        was_training = self.training
        self.eval()
        vectors = self.all_vectors().float().cpu().numpy()
        self.train(was_training)
        return vectors, self.item_bias.detach().float().cpu().numpy()


def _residual_mlp(dim: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp
