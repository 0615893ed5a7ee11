"""Sequential next-item peers: SASRec and GRU4Rec, both trained with full-softmax cross-entropy.

SASRec (Kang & McAuley 2018) with cross-entropy over every item instead of sampled negatives is
its strong form (Klenitskiy & Vasilev, RecSys 2023). GRU4Rec (Hidasi et al. 2016) here is its
recurrent encoder (one GRU layer over item embeddings) trained the same way: padded windows and
full softmax, not the session-parallel, negative-sampled training of the original code. Both
read a history oldest first and score every item by the dot product of the last hidden state
with the item embeddings (input and output embeddings tied). Epochs are chosen by validation
HR@20 on the s2i queries (early stopping). Plain PyTorch: CUDA where available, else CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from itemvec.evaluation.protocol import Queries, metrics_from_ranks, target_ranks

logger = logging.getLogger(__name__)
KINDS = ("sasrec", "gru4rec")


@dataclass(frozen=True)
class SeqConfig:
    """One training configuration; ``patience`` counts validations without improvement."""

    kind: str = "sasrec"
    dim: int = 64
    dropout: float = 0.2
    lr: float = 1e-3
    max_len: int = 50
    layers: int = 2  # transformer blocks (SASRec); GRU4Rec uses one GRU layer
    heads: int = 1
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 5
    seed: int = 0


@dataclass
class FitLog:
    """What early stopping saw: validation HR@20 per epoch and the epoch kept."""

    best_epoch: int = 0
    best_hr: float = -1.0
    curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def zero_padding(embedding: nn.Embedding) -> None:
    """Unit-scale item rows (logits start small) and a zero padding row."""
    with torch.no_grad():
        embedding.weight[embedding.padding_idx].zero_()


class SASRec(nn.Module):
    """Causal self-attention over item embeddings plus learned positions counted from the end
    of the sequence (the newest item always has the last position, as with SASRec's padding)."""

    def __init__(self, n_items: int, config: SeqConfig) -> None:
        super().__init__()
        self.dim, self.max_len = config.dim, config.max_len
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(config.dim, config.heads, dim_feedforward=config.dim,
                                       dropout=config.dropout, batch_first=True,
                                       norm_first=True)
            for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.items.weight, std=config.dim ** -0.5)
        nn.init.normal_(self.positions.weight, std=1.0)
        zero_padding(self.items)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``seq``: (batch, L) item index + 1, right-padded with 0 -> hidden (batch, L, dim).
        Right padding needs no key mask: a real position's causal window holds no padding."""
        length = seq.shape[1]
        steps = torch.arange(length, device=seq.device)[None, :]
        position = (self.max_len - lengths[:, None] + steps).clamp(0, self.max_len - 1)
        x = self.items(seq) * math.sqrt(self.dim) + self.positions(position)
        x = self.dropout(x)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        for block in self.blocks:
            x = block(x, src_mask=causal)
        return self.norm(x)


class GRU4Rec(nn.Module):
    """Item embedding -> dropout -> one GRU layer -> dropout; right padding comes after the
    real items, so their states do not see it."""

    def __init__(self, n_items: int, config: SeqConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.dim, config.dim, batch_first=True)
        nn.init.normal_(self.items.weight, std=config.dim ** -0.5)
        zero_padding(self.items)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(self.dropout(self.items(seq)))
        return self.dropout(hidden)


def build(n_items: int, config: SeqConfig) -> nn.Module:
    if config.kind == "sasrec":
        return SASRec(n_items, config)
    if config.kind == "gru4rec":
        return GRU4Rec(n_items, config)
    raise ValueError(f"unknown sequential model {config.kind!r}; known: {', '.join(KINDS)}")


def windows(sequences: Sequence[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Cut each sequence into pieces of at most ``max_len + 1`` items (inputs plus the next
    item), from the end backwards and overlapping by one, so every transition is trained on."""
    out = []
    for seq in sequences:
        stop = len(seq)
        while stop >= 2:
            start = max(stop - max_len - 1, 0)
            out.append(np.asarray(seq[start:stop], dtype=np.int64))
            stop = start + 1
    return out


def pad(rows: Sequence[np.ndarray], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (batch, longest) tensor of item index + 1 and the lengths."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    batch = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    for i, row in enumerate(rows):
        batch[i, :len(row)] = np.asarray(row) + 1
    return torch.from_numpy(batch).to(dev), torch.from_numpy(lengths).to(dev)


def logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Scores over every item (tied output embeddings; row 0 is padding)."""
    return hidden @ model.items.weight[1:].T


def train_step(model: nn.Module, optimiser: torch.optim.Optimizer, rows: list[np.ndarray],
               dev: torch.device) -> float:
    """Full-softmax cross-entropy at every real position of a batch of windows."""
    inputs, lengths = pad([r[:-1] for r in rows], dev)
    targets, _ = pad([r[1:] for r in rows], dev)
    real = targets > 0
    hidden = model(inputs, lengths)[real]
    loss = nn.functional.cross_entropy(logits(model, hidden), targets[real] - 1)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


class SequenceScorer:
    """``score_histories`` for the benchmark: the last ``max_len`` items of each history."""

    def __init__(self, model: nn.Module, max_len: int, n_items: int) -> None:
        self.model, self.max_len, self.n_items = model.eval(), max_len, n_items
        self.device = next(model.parameters()).device

    def __len__(self) -> int:
        return self.n_items

    @torch.no_grad()
    def score_histories(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        rows = [np.asarray(h)[-self.max_len:] for h in histories]
        seq, lengths = pad(rows, self.device)
        hidden = self.model(seq, lengths)[torch.arange(len(rows)), lengths - 1]
        return logits(self.model, hidden).float().cpu().numpy()


def hit_rate(scorer: SequenceScorer, queries: Queries, k: int = 20) -> float:
    return metrics_from_ranks(target_ranks(scorer, queries, batch_size=512), k)[f"HR@{k}"]


def subsample(queries: Queries, n: int, seed: int = 0) -> Queries:
    """At most ``n`` of ``queries`` (seeded, order kept): early stopping checks every epoch."""
    if len(queries) <= n:
        return queries
    keep = np.sort(np.random.default_rng(seed).choice(len(queries), size=n, replace=False))
    return Queries([queries.histories[i] for i in keep], queries.targets[keep],
                   queries.skipped_unknown)


def fit(sequences: Sequence[np.ndarray], n_items: int, valid: Queries,
        config: SeqConfig) -> tuple[nn.Module, FitLog]:
    """Train on every transition of ``sequences``; keep the epoch with the best validation
    HR@20 and stop after ``patience`` epochs without improvement."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    dev = device()
    model = build(n_items, config).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    pieces = windows(sequences, config.max_len)
    log, best_state, began = FitLog(device=dev.type), None, time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        order = rng.permutation(len(pieces))
        for start in range(0, len(order), config.batch_size):
            train_step(model, optimiser, [pieces[i] for i in order[start:start + config.batch_size]],
                       dev)
        hr = hit_rate(SequenceScorer(model, config.max_len, n_items), valid)
        log.curve.append(round(hr, 5))
        logger.info("%s epoch %d: valid HR@20 %.4f (%.0fs)", config.kind, epoch, hr,
                    time.perf_counter() - began)
        if hr > log.best_hr:
            log.best_hr, log.best_epoch = hr, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - log.best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    log.seconds = time.perf_counter() - began
    logger.info("%s: best epoch %d of %d, valid HR@20 %.4f, %.1fs on %s", config.kind,
                log.best_epoch, len(log.curve), log.best_hr, log.seconds, log.device)
    return model.eval(), log
