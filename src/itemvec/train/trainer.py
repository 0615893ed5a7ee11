"""Fit the encoder to a co-occurrence matrix: spectral start, mini-batch training, early stopping.

The trainer only produces weights; queries are answered by ``ItemEmbeddings`` built from its
output, so nothing here is needed at serving time.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from itemvec.config import TrainingConfig
from itemvec.model.encoder import ItemEncoder
from itemvec.model.objectives import build_objective
from itemvec.model.optimiser import build_optimiser, use_sparse_updates
from itemvec.model.spectral import popularity_logits, spectral_vectors
from itemvec.train.checkpoint import CheckpointManager, TrainingState, run_identity
from itemvec.util.errors import ItemvecError

logger = logging.getLogger(__name__)

Validator = Callable[[ItemEncoder], float]
LONG_EPOCH_STEPS = 1000  # epochs with this many steps get their own progress bar
Callback = Callable[[dict], None]  # receives each epoch's record: epoch, loss, validation, ...


class TrainingDivergedError(ItemvecError):
    """The loss became NaN or infinite; nothing is saved."""


@dataclass
class TrainingResult:
    encoder: ItemEncoder
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        """Trained epochs; a scored start (epoch 0) is in ``history`` but trained nothing."""
        return sum("loss" in record for record in self.history)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ItemvecError(f"training.device {name!r} asked for, but CUDA is not available; "
                           "use --device cpu")
    return torch.device(name)


def patience_spent(stale: int, since_best: int, per_epoch: int, patience: int,
                   patience_batches: int) -> bool:
    """Early stopping: ``stale`` evaluations without a new best, ``since_best`` epochs of
    ``per_epoch`` batches each. Both counts must be reached: on a small catalogue an epoch is
    one or a few batches and validation keeps creeping up for dozens of epochs; on a large one
    an epoch is thousands of batches (``benchmarks/results/stopping.md``)."""
    return stale >= patience and since_best * per_epoch >= patience_batches


class Trainer:
    """Trains an ``ItemEncoder`` on co-occurrence targets with the configured objective."""

    def __init__(self, config: TrainingConfig, validator: Validator | None = None,
                 progress: bool = True, callbacks: list[Callback] | tuple = (),
                 checkpoint: CheckpointManager | None = None, resume: bool = False) -> None:
        self.config = config
        self.validator = validator
        self.progress = progress
        self.callbacks = list(callbacks)
        self.checkpoint = checkpoint  # saves at epoch ends, every checkpoint.every seconds
        self.resume = resume
        self._identity: dict | None = None
        self.device = resolve_device(config.device)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ItemvecError(f"training.precision fp16 needs a CUDA device, got "
                               f"{self.device.type}; use bf16 (or fp32) on the CPU")
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        self._scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None

    def build_encoder(self, targets: sp.csr_matrix) -> ItemEncoder:
        torch.manual_seed(self.config.seed)
        encoder = ItemEncoder(targets.shape[0], self.config.dim, self.config.hidden)
        if self.config.init == "svd":
            encoder.initialise(spectral_vectors(targets, self.config.dim, self.config.seed),
                               popularity_logits(targets))
        return encoder.to(self.device)

    def fit(self, targets: sp.csr_matrix, encoder: ItemEncoder | None = None) -> TrainingResult:
        """Train ``encoder`` (a fresh one, spectrally initialised, when None) on ``targets``."""
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        started = time.perf_counter()
        if not np.isfinite(targets.data).all():
            raise TrainingDivergedError("the co-occurrence counts contain inf or NaN (overflow from "
                                        "huge --event-weights?); use smaller event weights")
        resumed = self._open_checkpoint(targets)  # refuse a mismatched checkpoint before any work
        fresh = encoder is None  # a spectral start built here is itself a candidate model
        encoder = self.build_encoder(targets) if fresh else encoder.to(self.device)
        objective = build_objective(targets, self.config, self.device)
        optimiser = build_optimiser(encoder, self.config, self.sparse_updates(targets.shape[0]))
        result = self._loop(encoder, objective, optimiser, resumed, fresh)
        result.seconds = time.perf_counter() - started
        return result

    def _loop(self, encoder, objective, optimiser, resumed: TrainingState | None = None,
              score_start: bool = False) -> TrainingResult:
        rng = np.random.default_rng(self.config.seed)
        result = TrainingResult(encoder=encoder)
        best_state, stale, first = copy.deepcopy(encoder.state_dict()), 0, 1
        per_epoch = len(objective)
        if resumed is not None:
            best_state, stale, first = self._restore(resumed, encoder, optimiser, rng, result,
                                                     per_epoch)
        elif score_start and self.validator is not None:
            self._score_start(encoder, result)
        bar = tqdm(range(first, self.config.epochs + 1), desc="training", unit="epoch",
                   initial=first - 1, total=self.config.epochs,
                   disable=not self.progress, leave=False)
        for epoch in bar:
            loss = self._epoch(encoder, objective, optimiser, rng, epoch)
            record = {"epoch": epoch, "loss": loss}
            if self.validator is not None and (epoch % self.config.eval_every == 0
                                               or epoch == self.config.epochs):
                score = self.validator(encoder)
                record["validation"] = score
                if result.best_score is None or score > result.best_score:
                    result.best_score, result.best_epoch = score, epoch
                    best_state, stale = copy.deepcopy(encoder.state_dict()), 0
                else:
                    stale += 1
            self._report(record, result, bar)
            stop = self._patience_spent(stale, epoch - result.best_epoch, per_epoch)
            if self.checkpoint is not None and self.checkpoint.due(
                    final=stop or epoch == self.config.epochs):
                self._save(epoch, encoder, optimiser, rng, result, best_state, stale)
            if stop:
                logger.info("early stop at epoch %d (best %d)", epoch, result.best_epoch)
                break
        if self.validator is not None:
            encoder.load_state_dict(best_state)
        else:
            result.best_epoch = result.history[-1]["epoch"]
        return result

    def _score_start(self, encoder: ItemEncoder, result: TrainingResult) -> None:
        """Epoch 0: the spectral start is often near the optimum on large, clean logs, and
        training only has to beat it."""
        result.best_score, result.best_epoch = self.validator(encoder), 0
        self._report({"epoch": 0, "validation": result.best_score}, result, None)

    def _report(self, record: dict, result: TrainingResult, bar) -> None:
        result.history.append(record)
        for callback in self.callbacks:
            callback(record)
        if bar is not None:
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        logger.info("epoch %d: %s", record["epoch"], record)

    def _patience_spent(self, stale: int, since_best: int, per_epoch: int) -> bool:
        return patience_spent(stale, since_best, per_epoch, self.config.patience,
                              self.config.patience_batches)

    # -- checkpoints: taken at epoch ends, so the numpy RNG state alone fixes every later batch --
    def _open_checkpoint(self, targets: sp.csr_matrix) -> TrainingState | None:
        if self.checkpoint is None:
            if self.resume:
                raise ItemvecError("resume asked for, but no checkpoint location is configured")
            return None
        self._identity = run_identity(self.config, targets)
        if not self.resume:
            if self.checkpoint.exists():
                logger.warning("starting over: the checkpoint at %s will be replaced (pass "
                               "--resume to continue it instead)", self.checkpoint.path)
            return None
        state = self.checkpoint.load()
        self.checkpoint.validate(state, self._identity)
        logger.warning("resuming from %s after epoch %d of %d", self.checkpoint.path,
                       state.epoch, self.config.epochs)
        return state

    def _save(self, epoch, encoder, optimiser, rng, result, best_state, stale) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        state = TrainingState(
            epoch=epoch, encoder=encoder.state_dict(), optimiser=optimiser.state_dict(),
            numpy_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(), cuda_rng=cuda,
            best=best_state if self.validator is not None else None,
            best_score=result.best_score, best_epoch=result.best_epoch, stale=stale,
            history=result.history, identity=self._identity or {})
        try:
            self.checkpoint.save(state)
        except OSError as exc:  # disk full, say: a lost checkpoint must not cost the whole run
            logger.warning("could not write checkpoint %s (%s); training goes on, the previous "
                           "checkpoint (if any) is intact", self.checkpoint.path, exc)

    def _restore(self, state: TrainingState, encoder, optimiser, rng,
                 result: TrainingResult, per_epoch: int) -> tuple[dict, int, int]:
        """Put every piece of ``state`` back; returns (best weights, stale count, next epoch)."""
        encoder.load_state_dict(state.encoder)
        optimiser.load_state_dict(state.optimiser)
        rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng and torch.cuda.is_available() \
                and len(state.cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        result.history = list(state.history)
        result.best_score, result.best_epoch = state.best_score, state.best_epoch
        best = state.best if state.best is not None else copy.deepcopy(encoder.state_dict())
        best = {k: v.to(self.device) for k, v in best.items()}
        done = (self._patience_spent(state.stale, state.epoch - state.best_epoch, per_epoch)
                or state.epoch >= self.config.epochs)
        return best, state.stale, self.config.epochs + 1 if done else state.epoch + 1

    def sparse_updates(self, n_items: int) -> bool:
        return use_sparse_updates(self.config, n_items)

    # hooks for itemvec.train.distributed: this process's part of a batch; gradient all-reduce
    def shard(self, batch):
        return batch

    def after_backward(self, encoder: ItemEncoder) -> None:
        pass

    def _epoch(self, encoder, objective, optimiser, rng, epoch: int) -> float:
        """One pass; with ``accumulate`` > 1 the optimiser steps once per that many batches
        (and once more for a remainder at the end of the epoch), on the mean of their losses."""
        encoder.train()
        total, steps, every = 0.0, 0, self.config.accumulate
        n_batches = len(objective)
        optimiser.zero_grad(set_to_none=True)
        batches = tqdm(objective.batches(rng), total=n_batches, desc=f"epoch {epoch}", unit="step",
                       leave=False, disable=not self.progress or n_batches < LONG_EPOCH_STEPS)
        for steps, batch in enumerate(batches, start=1):
            with self._autocast():
                loss = objective.loss(encoder, self.shard(batch))
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss became {loss.item()} at epoch {epoch}, step {steps}; "
                    "lower training.lr or raise training.temperature")
            scaled = loss / min(every, n_batches - (steps - 1) // every * every)
            (self._scaler.scale(scaled) if self._scaler is not None else scaled).backward()
            if steps % every == 0 or steps == n_batches:
                self._step(encoder, optimiser, epoch, steps)
            total += loss.item()
        # The loss check sees bad weights one step late; never checkpoint or export them.
        for name, value in encoder.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise TrainingDivergedError(f"weights {name} became inf or NaN in epoch {epoch}, "
                                            f"step {steps}; lower training.lr")
        return total / max(steps, 1)

    def _step(self, encoder, optimiser, epoch: int, steps: int) -> None:
        self.after_backward(encoder)
        try:
            if self._scaler is not None:  # fp16: skips the step when gradients overflowed
                self._scaler.step(optimiser)
                self._scaler.update()
            else:
                optimiser.step()
        except RuntimeError as exc:  # e.g. lr so large the Adam step size overflows float32
            if "overflow" not in str(exc):
                raise
            raise TrainingDivergedError(
                f"optimiser step overflowed at epoch {epoch}, step {steps}; lower "
                f"training.lr (now {self.config.lr})") from None
        optimiser.zero_grad(set_to_none=True)

    def _autocast(self):
        """Mixed precision: matmuls in bf16/fp16, reductions (log-softmax) kept in fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)
