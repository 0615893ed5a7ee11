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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from itemvec.config import TrainingConfig
from itemvec.data.ingest import EventLog
from itemvec.evaluation.protocol import Queries
from itemvec.evaluation.query_tuning import MARGIN, score
from itemvec.model.encoder import ItemEncoder
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.train.trainer import Stage, Trainer

logger = logging.getLogger(__name__)
MAX_LENGTH = 50  # history items per example (the most recent ones)
MAX_TARGETS_PER_BASKET = 30
MAX_EXAMPLES = 300_000  # examples kept (one seeded sample beyond this, the same every epoch)
MIN_ROUND = 4096  # examples in the probe round, at least
ROUND_WORK = 2**28  # item scores in the probe round (round_size)
HISTORIES, PROBE = "histories", "histories-probe"  # stage names: callbacks, logs, checkpoints


@dataclass
class HistoryExamples:
    """Padded histories: ``items`` (n x L, pad = n_items), their pooling ``weights`` (0 at pads)
    and the held-out ``targets``."""

    items: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, rows) -> HistoryExamples:
        """The examples at ``rows`` (a slice or index tensor): batches and shards."""
        return HistoryExamples(self.items[rows], self.weights[rows], self.targets[rows])


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
    if torch.is_autocast_enabled(query.device.type):  # bf16/fp16: autograd's own kernels
        logits = query @ vectors.T / temperature + popularity_weight * encoder.item_bias
        logits = torch.cat([logits, logits.new_zeros(len(logits), 1)], dim=1)
        logits = logits.scatter(1, batch.items, float("-inf"))[:, :-1]
        return F.cross_entropy(logits, batch.targets)
    return MaskedCrossEntropy.apply(query, vectors, encoder.item_bias, batch.items,
                                    batch.targets, temperature, popularity_weight)


class MaskedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of one target per row over all items, some items per row masked;
    gradient by hand (d loss / d logit = (softmax - one-hot) / rows), one rows x items buffer.

    As for ``objectives.SoftTargetCrossEntropy``: autograd's chain (scale, add the bias, pad,
    scatter the mask, log-softmax) walks the rows x items logits many times; this walks it
    about five times. ``items`` may hold the pad index ``n_items`` after the first column.
    """

    @staticmethod
    def forward(ctx, query, vectors, bias, items, targets, temperature, popularity_weight):
        scaled = query / temperature
        logits = torch.addmm(bias * popularity_weight, scaled, vectors.T)
        rows = torch.arange(len(targets), device=logits.device)
        picked = logits[rows, targets]
        items = torch.where(items < logits.shape[1], items, items[:, :1])  # pad: the 1st item again
        logits.scatter_(1, items, float("-inf"))
        top = logits.amax(dim=1)
        probs = logits.sub_(top[:, None]).exp_()
        total = probs.sum(dim=1)
        loss = (top + total.log() - picked).mean()
        grad = probs.mul_((1.0 / (total * len(targets)))[:, None])
        grad[rows, targets] -= 1.0 / len(targets)
        ctx.save_for_backward(scaled, vectors, grad)
        ctx.temperature, ctx.popularity_weight = temperature, popularity_weight
        return loss

    @staticmethod
    def backward(ctx, upstream):
        scaled, vectors, grad = ctx.saved_tensors
        return ((grad @ vectors) * (upstream / ctx.temperature), (grad.T @ scaled) * upstream,
                grad.sum(dim=0) * (upstream * ctx.popularity_weight), None, None, None, None)


class HistoryTask:
    """Fine-tuning as a ``Task``: an epoch is ``round_size`` examples (a pass by default) in
    an order drawn from the seeded generator."""

    def __init__(self, examples: HistoryExamples, temperature: float, popularity_weight: float,
                 batch_size: int, round_size: int | None = None) -> None:
        self.examples, self.batch_size = examples, batch_size
        self.temperature, self.popularity_weight = temperature, popularity_weight
        self.round_size = min(round_size or len(examples), len(examples))

    def __len__(self) -> int:
        return -(-self.round_size // self.batch_size)

    def batches(self, rng: np.random.Generator):
        rows = rng.permutation(len(self.examples))[:self.round_size]
        for begin in range(0, len(rows), self.batch_size):
            yield self.examples[torch.from_numpy(rows[begin:begin + self.batch_size])]

    def loss(self, model: ItemEncoder, batch: HistoryExamples) -> torch.Tensor:
        device = model.item_bias.device
        width = max(int((batch.weights > 0).sum(dim=1).max()), 1)  # this batch's longest
        batch = HistoryExamples(batch.items[:, :width].to(device),
                                batch.weights[:, :width].to(device), batch.targets.to(device))
        return history_loss(model, batch, self.temperature, self.popularity_weight)


def round_size(n_examples: int, n_items: int) -> int:
    """Examples in the probe round: ``ROUND_WORK`` item scores (each example scores every
    item), at least ``MIN_ROUND`` examples, at most a pass. Small catalogues get a whole pass
    (cheap, and their gain shows only after one); large ones a verdict in seconds."""
    return min(n_examples, max(MIN_ROUND, ROUND_WORK // max(n_items, 1)))


def finetune(encoder: ItemEncoder, embeddings: ItemEmbeddings, examples: HistoryExamples,
             queries: dict[str, Queries] | None, epochs: int, lr: float, batch_size: int = 512,
             patience: int = 2, seed: int = 0, progress: bool = False,
             trainer: Trainer | None = None, probe_examples: int | None = None) -> dict:
    """Train ``encoder`` in place on ``examples``; keep the best state on ``queries`` (the
    start included: nothing changes unless training beats it by ``tuning.MARGIN``).

    Stages of ``trainer`` (device, precision, callbacks, checkpoints; a CPU trainer with
    ``seed`` when None): with ``probe_examples``, first ``histories-probe``, one validated
    round of that many examples; unless it beats the start, that is all it costs. Then
    ``histories``: up to ``epochs`` passes, ``patience`` without a new best stop it. In the
    report ``best_epoch`` 0 is the start kept, and with a probe 1 is the probe's state.
    Without ``queries`` (the refit on every context) nothing is validated: the probe (when
    ``probe_examples``) and then passes are trained up to ``epochs`` in all, as chosen before.
    """
    if trainer is None:
        device = str(encoder.item_bias.device)
        trainer = Trainer(TrainingConfig(seed=seed, device=device), progress=progress)

    def run(name: str, size: int | None, passes: int, margin: float):
        task = HistoryTask(examples, embeddings.temperature, embeddings.query.popularity_weight,
                           batch_size, size)
        validator = None if queries is None else (
            lambda model: score(_export(model, embeddings), embeddings.query, queries))
        return trainer.run(encoder, task, Stage(name, passes, lr, patience=patience,
                                                margin=margin, lr_field="training.history_lr"),
                           validator=validator, score_start=validator is not None)

    if queries is None:
        return _replay(run, len(examples), epochs, probe_examples)
    runs = []
    if probe_examples:
        runs.append(run(PROBE, probe_examples, 1, MARGIN))
        epochs -= probe_examples >= len(examples)  # the probe was a whole pass
    if epochs > 0 and (not runs or runs[0].best_epoch):
        runs.append(run(HISTORIES, None, epochs, 0.0 if runs else MARGIN))
    probed = int(bool(probe_examples) and runs[0].best_epoch > 0)
    return {"examples": len(examples), "probe_examples": probe_examples,
            "start": runs[0].history[0]["validation"],
            "best": runs[-1].best_score, "best_epoch": runs[-1].best_epoch + probed
            if len(runs) > 1 else runs[0].best_epoch,
            "epochs_run": sum(r.epochs_run for r in runs),
            "history": [record for r in runs for record in r.history[1:]],
            "seconds": round(sum(r.seconds for r in runs), 3)}


def _replay(run, n_examples: int, epochs: int, probe_examples: int | None) -> dict:
    """The chosen schedule again, unvalidated: ``epochs`` counts the probe as one."""
    runs = []
    if probe_examples and epochs > 0:
        runs.append(run(PROBE, probe_examples, 1, 0.0))
        epochs -= 1
    if epochs > 0:
        runs.append(run(HISTORIES, None, epochs, 0.0))
    return {"examples": n_examples, "probe_examples": probe_examples,
            "best_epoch": sum(r.epochs_run for r in runs),
            "epochs_run": sum(r.epochs_run for r in runs),
            "history": [record for r in runs for record in r.history],
            "seconds": round(sum(r.seconds for r in runs), 3)}


def _export(encoder: ItemEncoder, embeddings: ItemEmbeddings) -> ItemEmbeddings:
    vectors, bias = encoder.export()
    view = embeddings.with_query()
    view.vectors, view.item_bias = vectors, bias
    return view
