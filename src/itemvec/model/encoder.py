"""The item encoder f(item) -> unit vector in R^d.

An id embedding table, optionally plus side-feature embeddings, followed by a residual MLP
(zero-initialised, so a spectral initialisation passes through unchanged at step 0) and L2
normalisation: cosine similarity is then a plain dot product.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
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
        """Every item's vector: the table itself, not a gather of all its rows, whose backward
        (a scatter of the whole table) cost ~40% of this call at 12k items."""
        x = self.item_embedding.weight
        if self.mlp is not None:
            x = x + self.mlp(x)
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors, popularity logits) as float32 numpy arrays."""
        was_training = self.training
        self.eval()
        vectors = self.all_vectors().float().cpu().numpy()
        self.train(was_training)
        return vectors, self.item_bias.detach().float().cpu().numpy()


class FeatureEncoder(ItemEncoder):
    """An ``ItemEncoder`` whose vectors also draw on side features (EGES-style fusion).

    vector(i) = normalize(sum_j a_ij * e_j(i)) over j in {id, field_1, ..., field_F}, where
    e_field is the mean of the field's value embeddings and a_i = softmax(field logits + per-item
    logits) over the fields the item has. Items ``0..n_items-1`` are warm (trained, with id rows);
    items from ``n_items`` on are cold: features only. During training the id path is dropped for
    a random ``id_dropout`` share of items (and single fields with ``field_dropout``), so the
    feature path learns to place an item on its own. Feature index tensors are non-persistent
    buffers: they are rebuilt from the item table, not stored with the weights.

    With ``id_only`` set (the behaviour-first mode, ``itemvec.train.coldstart``) a warm item is its id
    vector alone, exactly as a plain ``ItemEncoder`` would give it, and the feature path serves
    cold items only; ``cold_bias`` is then a calibrated head that ``export`` leaves alone, and
    ``cold_offset`` the global shift chosen on validation queries.
    """

    def __init__(self, n_items: int, dim: int, hidden: int, field_sizes: list[int],
                 features: list[np.ndarray] | None = None, id_dropout: float = 0.25,
                 field_dropout: float = 0.1, temperature: float = 0.1) -> None:
        super().__init__(n_items, dim, hidden)
        self.temperature = temperature  # the objective's: scales the cold-logit correction
        self.field_sizes = list(field_sizes)
        self.field_tables = nn.ModuleList(nn.Embedding(size, dim, padding_idx=0)
                                          for size in self.field_sizes)
        for table in self.field_tables:
            nn.init.normal_(table.weight, std=0.01)
            with torch.no_grad():
                table.weight[0].zero_()
        n_fields = len(self.field_sizes)
        self.field_logits = nn.Parameter(torch.zeros(1 + n_fields))
        self.item_logits = nn.Embedding(n_items, 1 + n_fields)
        nn.init.zeros_(self.item_logits.weight)
        self.register_buffer("cold_bias", torch.zeros(dim + 1))  # ridge: features -> bias
        self.register_buffer("cold_offset", torch.zeros(()))  # calibrated shift of cold logits
        self.register_buffer("id_only", torch.zeros((), dtype=torch.bool))  # behaviour-first
        # behaviour-first: how far each warm item leans on its features (0 = its id vector only)
        self.register_buffer("feature_share", torch.zeros(n_items))
        self.id_dropout, self.field_dropout = id_dropout, field_dropout
        self.n_total = n_items
        if features is not None:
            self.set_features(features)

    def set_features(self, features: list[np.ndarray]) -> None:
        """Index tensors, one per field, rows = warm items then cold items."""
        if len(features) != len(self.field_sizes):
            raise ValueError(f"{len(features)} feature fields, encoder has {len(self.field_sizes)}")
        device = self.item_embedding.weight.device
        for f, index in enumerate(features):
            self.register_buffer(f"features_{f}", torch.as_tensor(index, dtype=torch.long,
                                                                  device=device),
                                 persistent=False)
        self.n_total = len(features[0]) if features else self.n_items
        if self.n_total < self.n_items:
            raise ValueError(f"features cover {self.n_total} items, need >= {self.n_items}")

    def feature_rows(self, items: torch.Tensor) -> list[torch.Tensor]:
        """Feature index rows of ``items``, one tensor per field (0 = padding)."""
        return [getattr(self, f"features_{f}")[items] for f in range(len(self.field_sizes))]

    def all_vectors(self) -> torch.Tensor:
        """Every warm item through the feature fusion (not the id table alone)."""
        return self.forward(torch.arange(self.n_items, device=self.item_embedding.weight.device))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        vectors = self._fuse(items, self.feature_rows(items), allow_id=True)
        if bool(self.id_only) and bool((self.feature_share > 0).any()):
            vectors = self._lean_on_features(items, vectors)
        return vectors

    def _lean_on_features(self, items: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Warm items with little behaviour: normalize((1 - s) id vector + s feature vector)."""
        flat = items.reshape(-1)
        warm = flat < self.n_items
        share = torch.where(warm, self.feature_share[torch.where(warm, flat, 0)], 0.0)
        lean = share > 0
        if not bool(lean.any()):
            return vectors
        out = vectors.reshape(len(flat), -1).clone()
        s = share[lean, None]
        out[lean] = F.normalize((1 - s) * out[lean] + s * self.feature_vectors(flat[lean]), dim=-1)
        return out.reshape(vectors.shape)

    def feature_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors from the features alone (how a cold item is embedded)."""
        return self._fuse(items, self.feature_rows(items), allow_id=False)

    def _fuse(self, items: torch.Tensor, rows: list[torch.Tensor], allow_id: bool) -> torch.Tensor:
        shape = items.shape
        items = items.reshape(-1)
        warm = items < self.n_items
        safe = torch.where(warm, items, torch.zeros_like(items))
        fields, present = [], []
        for table, index in zip(self.field_tables, rows, strict=True):
            index = index.reshape(len(items), -1)
            # mean over the non-padding values, without materialising [items, values, dim]
            fields.append(F.embedding_bag(index, table.weight, mode="mean", padding_idx=0))
            present.append((index > 0).any(dim=1))
        use_id = warm & allow_id
        if bool(self.id_only):  # a warm item is its id vector; features are for cold items only
            present = [p & ~use_id for p in present]
        elif self.training and self.id_dropout > 0:
            use_id = use_id & (torch.rand(len(items), device=items.device) >= self.id_dropout)
        mask = torch.stack([use_id, *present], dim=1)
        if self.training and self.field_dropout > 0:
            keep = torch.rand(mask.shape, device=items.device) >= self.field_dropout
            keep[:, 0] = True
            mask = mask & keep
        logits = self.field_logits + self.item_logits(safe) * warm[:, None]
        weights = torch.softmax(logits.masked_fill(~mask, -1e9), dim=1) * mask
        x = weights[:, :1] * self.item_embedding(safe)
        for f, vector in enumerate(fields):
            x = x + weights[:, f + 1:f + 2] * vector
        if self.mlp is not None:
            x = x + self.mlp(x)
        return F.normalize(x, dim=-1).reshape(*shape, -1)

    @torch.no_grad()
    def initialise_features(self, vectors: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Start each value's embedding at the mean direction of the warm items having it.

        ``rows`` restricts the mean to those warm items (held-out ones must not leak into it).
        """
        rows = np.arange(self.n_items) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        vectors = vectors[rows]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.maximum(norms, 1e-12) * float(norms.mean())
        for f, table in enumerate(self.field_tables):
            index = getattr(self, f"features_{f}")[torch.as_tensor(rows)].cpu().numpy()
            hits, cols = np.nonzero(index)
            incidence = sp.csr_matrix((np.ones(len(hits)), (hits, index[hits, cols])),
                                      shape=(len(index), self.field_sizes[f]))
            mass = np.asarray(incidence.sum(axis=0)).ravel()
            means = np.asarray(incidence.T @ unit) / np.maximum(mass, 1)[:, None]
            seen = torch.as_tensor(mass > 0, device=table.weight.device)
            seen[0] = False
            table.weight[seen] = torch.as_tensor(means, dtype=table.weight.dtype,
                                                 device=table.weight.device)[seen]

    @torch.no_grad()
    def fit_cold_bias(self, ridge: float = 1.0, rows: torch.Tensor | None = None) -> None:
        """Ridge regression from feature-only vectors to the learned popularity logits.

        Over all warm items plus the partition-gap correction (joint mode), or over ``rows``
        alone without it (behaviour-first: an offset calibrated on validation replaces it).
        """
        index = torch.arange(self.n_items, device=self.item_bias.device)
        x = self.feature_vectors(index if rows is None else rows).double()
        y = self.item_bias[index if rows is None else rows].double()
        design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        gram = design.T @ design + ridge * torch.eye(design.shape[1], dtype=x.dtype,
                                                     device=x.device)
        gram[-1, -1] -= ridge  # no penalty on the intercept
        self.cold_bias.copy_(torch.linalg.solve(gram, design.T @ y).float())
        if rows is None:
            self.cold_bias[-1] += self.partition_gap(index, x.float())

    def partition_gap(self, index: torch.Tensor, features: torch.Tensor,
                       anchors: int = 1024) -> float:
        """log E[exp(true logit)] - log E[exp(feature logit)] over popularity-drawn queries.

        A mean-regressed logit under-rates a new item in expectation (Jensen: popular items
        carry most of the mass), so cold items get the average gap of the partition functions.
        """
        vectors = self.forward(index)
        generator = torch.Generator().manual_seed(0)
        weights = torch.softmax(self.item_bias.detach().float().cpu(), dim=0)
        drawn = torch.multinomial(weights, anchors, replacement=True, generator=generator)
        drawn = drawn.to(index.device)
        queries = vectors[drawn]
        true = queries @ vectors.T / self.temperature + self.item_bias
        guess = queries @ features.T / self.temperature + self.cold_logits(features)
        rows = torch.arange(len(drawn), device=index.device)
        true[rows, drawn] = float("-inf")
        guess[rows, drawn] = float("-inf")
        return float((torch.logsumexp(true, 1) - torch.logsumexp(guess, 1)).mean())

    def cold_logits(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors @ self.cold_bias[:-1] + self.cold_bias[-1] + self.cold_offset

    @torch.no_grad()
    def embed_features(self, features: list[np.ndarray], batch_size: int = 4096
                       ) -> tuple[np.ndarray, np.ndarray]:
        """(unit vectors, popularity logits) for new items given their feature index rows."""
        was_training = self.training
        self.eval()
        device = self.item_embedding.weight.device
        n = len(features[0]) if features else 0
        out_v, out_b = [], []
        for start in range(0, n, batch_size):
            rows = [torch.as_tensor(f[start:start + batch_size], dtype=torch.long, device=device)
                    for f in features]
            items = torch.full((len(rows[0]),), self.n_items, dtype=torch.long, device=device)
            vectors = self._fuse(items, rows, allow_id=False)
            out_v.append(vectors.float().cpu().numpy())
            out_b.append(self.cold_logits(vectors).float().cpu().numpy())
        self.train(was_training)
        if not out_v:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        return np.concatenate(out_v), np.concatenate(out_b)

    @torch.no_grad()
    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and logits for warm then cold items (cold logits predicted from features)."""
        was_training = self.training
        self.eval()
        if not bool(self.id_only):  # behaviour-first: the calibrated head stays as fitted
            self.fit_cold_bias()
        index = torch.arange(self.n_total, device=self.item_embedding.weight.device)
        vectors = torch.cat([self.forward(index[i:i + 8192]) for i in range(0, len(index), 8192)])
        bias = torch.cat([self.item_bias, self.cold_logits(vectors[self.n_items:])])
        self.train(was_training)
        return vectors.float().cpu().numpy(), bias.float().cpu().numpy()


def _residual_mlp(dim: int, hidden: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp
