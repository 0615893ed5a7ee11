"""Fine-tune on whole histories: the pooled history predicts the held-out item.

The co-occurrence objective teaches item -> item. ``recommend`` asks history -> item: the
history's unit vectors are pooled with the query weights (recency, evidence) and scored by
cosine / temperature plus the popularity logit. A few epochs on exactly that task, started from
the co-occurrence model, train the vectors for how they are used: summed into one query, not
compared one pair at a time. Examples come from the training
contexts (sessions: the previous <= 50 items -> the next; baskets: the rest of the basket -> one
item), history items are masked from the softmax as they are from rankings, and the result is
kept only if it beats the start on the validation slice (mean of i2i and s2i HR@20).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from itemvec.data.ingest import EventLog
from itemvec.evaluation.protocol import Queries
from itemvec.evaluation.query_tuning import MARGIN, score
from itemvec.model.encoder import ItemEncoder
from itemvec.query.embeddings import ItemEmbeddings

logger = logging.getLogger(__name__)
MAX_LENGTH = 50  # history items per example (the most recent ones)
MAX_TARGETS_PER_BASKET = 30
MAX_EXAMPLES = 300_000  # examples kept (one seeded sample beyond this, the same every epoch)


@dataclass
class HistoryExamples:
    """Padded histories: ``items`` (n x L, pad = n_items), their pooling ``weights`` (0 at pads)
    and the held-out ``targets``."""

    items: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def build_examples(log: EventLog, embeddings: ItemEmbeddings, seed: int = 0,
                   max_examples: int = MAX_EXAMPLES) -> HistoryExamples:
    """(history, target) pairs of ``log`` as ``recommend`` would see them."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(log.lengths())])
    histories, targets = [], []
    for c in range(log.n_contexts):
        context = log.items[starts[c]:starts[c + 1]]
        if len(context) < 2:
            continue
        for history, target in _context_examples(context, log.ordered, rng):
            if target not in history:  # evaluation skips such targets too
                histories.append(history)
                targets.append(target)
    if len(targets) > max_examples:
        keep = np.sort(rng.choice(len(targets), max_examples, replace=False))
        histories, targets = [histories[i] for i in keep], [targets[i] for i in keep]
    return _pad(histories, np.asarray(targets, dtype=np.int64), embeddings)


def _context_examples(context: np.ndarray, ordered: bool, rng: np.random.Generator):
    if ordered:
        for k in range(1, len(context)):
            yield context[max(0, k - MAX_LENGTH):k], context[k]
        return
    picks = np.arange(len(context)) if len(context) <= MAX_TARGETS_PER_BASKET else \
        rng.choice(len(context), MAX_TARGETS_PER_BASKET, replace=False)
    for k in picks:
        rest = np.delete(context, k)
        if len(rest) > MAX_LENGTH:
            rest = rng.choice(rest, MAX_LENGTH, replace=False)
        yield rest, context[k]


def _pad(histories: list[np.ndarray], targets: np.ndarray,
         embeddings: ItemEmbeddings) -> HistoryExamples:
    width = max((len(h) for h in histories), default=1)
    items = np.full((len(histories), width), len(embeddings), dtype=np.int64)
    weights = np.zeros((len(histories), width), dtype=np.float32)
    by_length: dict[int, np.ndarray] = {}
    for row, history in enumerate(histories):
        n = len(history)
        if n not in by_length:
            by_length[n] = embeddings.history_weights(n)
        items[row, :n] = history
        weights[row, :n] = by_length[n]
    return HistoryExamples(torch.from_numpy(items), torch.from_numpy(weights),
                           torch.from_numpy(targets))


def history_loss(encoder: ItemEncoder, batch: HistoryExamples, temperature: float,
                 popularity_weight: float) -> torch.Tensor:
    """Cross-entropy of the held-out item under recommend's scores, history items masked."""
    vectors = encoder.all_vectors()
    padded = torch.cat([vectors, vectors.new_zeros(1, vectors.shape[1])])
    query = (batch.weights.unsqueeze(-1) * padded[batch.items]).sum(dim=1)
    logits = query @ vectors.T / temperature + popularity_weight * encoder.item_bias
    logits = torch.cat([logits, logits.new_zeros(len(logits), 1)], dim=1)
    logits = logits.scatter(1, batch.items, float("-inf"))[:, :-1]
    return F.cross_entropy(logits, batch.targets)


def finetune(encoder: ItemEncoder, embeddings: ItemEmbeddings, examples: HistoryExamples,
             queries: dict[str, Queries] | None, epochs: int, lr: float, batch_size: int = 512,
             patience: int = 2, seed: int = 0, progress: bool = False) -> dict:
    """Train ``encoder`` in place on ``examples``; keep the best state on ``queries`` (the
    start included: nothing changes unless an epoch beats it by ``tuning.MARGIN``). Without
    ``queries`` (the refit replaying a chosen schedule) it trains exactly ``epochs`` epochs."""
    if queries is None:
        return _fixed_epochs(encoder, embeddings, examples, epochs, lr, batch_size, seed,
                             progress)
    began = time.perf_counter()
    start = best = score(embeddings, embeddings.query, queries)
    best_state, best_epoch, history = _state(encoder), 0, []
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    device = encoder.item_bias.device
    for epoch in range(1, epochs + 1):
        loss = _epoch(encoder, examples, embeddings, optimiser, batch_size, generator, device,
                      progress)
        value = score(_export(encoder, embeddings), embeddings.query, queries)
        history.append({"epoch": epoch, "loss": loss, "validation": value})
        logger.info("history fine-tuning epoch %d: loss %.4f, validation HR@20 %.4f",
                    epoch, loss, value)
        if value > best * (1 + MARGIN) or (best_epoch and value > best):
            best, best_epoch, best_state = value, epoch, _state(encoder)
        elif epoch - best_epoch >= patience:
            break
    encoder.load_state_dict(best_state)
    return {"examples": len(examples), "start": start, "best": best, "best_epoch": best_epoch,
            "epochs_run": len(history), "history": history,
            "seconds": round(time.perf_counter() - began, 3)}


def _fixed_epochs(encoder, embeddings, examples, epochs, lr, batch_size, seed,
                  progress) -> dict:
    began = time.perf_counter()
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    device = encoder.item_bias.device
    history = [{"epoch": epoch, "loss": _epoch(encoder, examples, embeddings, optimiser,
                                                batch_size, generator, device, progress)}
               for epoch in range(1, epochs + 1)]
    return {"examples": len(examples), "best_epoch": epochs, "epochs_run": epochs,
            "history": history, "seconds": round(time.perf_counter() - began, 3)}


def _epoch(encoder, examples, embeddings, optimiser, batch_size, generator, device,
           progress) -> float:
    encoder.train()
    order = torch.randperm(len(examples), generator=generator)
    total = 0.0
    for begin in tqdm(range(0, len(order), batch_size), disable=not progress,
                      desc="history fine-tuning", leave=False):
        rows = order[begin:begin + batch_size]
        batch = HistoryExamples(examples.items[rows].to(device), examples.weights[rows].to(device),
                                examples.targets[rows].to(device))
        loss = history_loss(encoder, batch, embeddings.temperature,
                            embeddings.query.popularity_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(rows)
    encoder.eval()
    return total / max(len(examples), 1)


def _export(encoder: ItemEncoder, embeddings: ItemEmbeddings) -> ItemEmbeddings:
    vectors, bias = encoder.export()
    view = embeddings.with_query()
    view.vectors, view.item_bias = vectors, bias
    return view


def _state(encoder: ItemEncoder) -> dict:
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}
