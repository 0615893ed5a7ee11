"""One training loop for every stage: co-occurrence training, history fine-tuning, the cold-start
feature tower.

A stage is a model, a ``Task`` (``batches(rng)``, ``loss(model, batch)``, ``len`` = batches per
epoch: the co-occurrence objectives are tasks), a ``Stage`` (name, epochs, learning rate,
stopping rule) and an optional validator. ``Trainer.run`` gives each of them the same device,
mixed precision, gradient accumulation, divergence checks, keep-best early stopping, callbacks
(records carry the stage name) and per-stage checkpoints. Distributed behaviour (batch shards,
gradient all-reduce, rank-0 validation) comes in through a ``context`` given to the
constructor. ``fit`` is the co-occurrence stage: spectral start, objective, then ``run``.

The trainer only produces weights; queries are answered by ``ItemEmbeddings`` built from its
output, so nothing here is needed at serving time.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from itemvec.config import TrainingConfig
from itemvec.model.encoder import ItemEncoder
from itemvec.model.objectives import build_objective
from itemvec.model.optimiser import adam, use_sparse_updates
from itemvec.model.spectral import popularity_logits, spectral_vectors
from itemvec.train.checkpoint import CheckpointManager, TrainingState, run_identity
from itemvec.util.errors import ItemvecError

logger = logging.getLogger(__name__)

Validator = Callable[[torch.nn.Module], float]  # higher is better
LONG_EPOCH_STEPS = 1000  # epochs with this many steps get their own progress bar
Callback = Callable[[dict], None]  # receives each epoch's record: stage, epoch, loss, validation
COOCCURRENCE = "cooccurrence"  # the main stage's name (its checkpoint keeps the plain file name)


class TrainingDivergedError(ItemvecError):
    """The loss became NaN or infinite; nothing is saved."""


class Task(Protocol):
    """What a stage trains on; the co-occurrence objectives are tasks."""

    def __len__(self) -> int: ...  # batches per epoch
    def batches(self, rng: np.random.Generator) -> Iterator[Any]: ...
    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class Stage:
    """How one stage trains. Early stopping: ``patience`` evaluations without a new best and
    ``patience_batches`` batches since it (``patience_spent``). ``margin``: the relative gain
    over a scored start the first better epoch needs (a start merely matched is kept).
    ``lr_field`` is the setting a divergence message tells the user to lower."""

    name: str
    epochs: int
    lr: float
    weight_decay: float = 0.0
    sparse: bool = False
    eval_every: int = 1
    patience: int = 2
    patience_batches: int = 0
    margin: float = 0.0
    checkpointed: bool = True
    lr_field: str = "training.lr"


class LocalContext:
    """One process: whole batches, gradients as computed. ``itemvec.train.distributed`` has a
    data-parallel context with the same methods, given to ``Trainer(context=...)``."""

    rank, world = 0, 1
    dense_only = False  # True: no row-sparse gradients (they cannot be all-reduced flat)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def shard(self, batch: Any) -> Any:
        return batch

    def after_backward(self, model: torch.nn.Module) -> None:
        pass

    def mean(self, value: float) -> float:
        return value

    def shared(self, validator: Validator) -> Validator:
        return validator


@dataclass
class TrainingResult:
    encoder: torch.nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        """Trained epochs; a scored start (epoch 0) is in ``history`` but trained nothing."""
        return sum("loss" in record for record in self.history)


@dataclass
class _Run:
    """One stage's run: its settings, validator and checkpoint file."""

    stage: Stage
    validator: Validator | None
    checkpoint: CheckpointManager | None
    identity: dict = field(default_factory=dict)
    per_epoch: int = 1
    resumed: TrainingState | None = None  # what ``--resume`` continues from


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


def improves(score: float, result: TrainingResult, margin: float) -> bool:
    """A new best? Against a scored start (epoch 0) it must win by ``margin`` (relative)."""
    if result.best_score is None:
        return True
    if result.best_epoch == 0 and margin:
        return score > result.best_score * (1 + margin)
    return score > result.best_score


class Trainer:
    """Runs training stages; ``fit`` is the co-occurrence stage of an ``ItemEncoder``.

    One Trainer serves every stage of a pipeline run, so device, precision, accumulation,
    callbacks, checkpoints and ``resume`` are the same for all of them. On resume the
    co-occurrence stage must find its checkpoint; a later stage continues from its own when
    there is one (interrupted in it) and starts afresh otherwise (not reached before).
    """

    def __init__(self, config: TrainingConfig, validator: Validator | None = None,
                 progress: bool = True, callbacks: Iterable[Callback] = (),
                 checkpoint: CheckpointManager | None = None, resume: bool = False,
                 context: LocalContext | None = None) -> None:
        self.config = config
        self.context = context if context is not None else LocalContext()
        main = self.context.rank == 0
        self.validator = validator  # the co-occurrence stage's (``fit``)
        self.progress = progress and main
        self.callbacks = list(callbacks) if main else []
        self.checkpoint = checkpoint  # one file per stage, saved at epoch ends (checkpoint.every)
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

    def main_stage(self, n_items: int) -> Stage:
        c = self.config
        return Stage(COOCCURRENCE, c.epochs, c.lr, c.weight_decay, self.sparse_updates(n_items),
                     c.eval_every, c.patience, c.patience_batches)

    def fit(self, targets: sp.csr_matrix, encoder: ItemEncoder | None = None) -> TrainingResult:
        """Train ``encoder`` (a fresh one, spectrally initialised, when None) on ``targets``."""
        started = time.perf_counter()
        if not np.isfinite(targets.data).all():
            raise TrainingDivergedError("the co-occurrence counts contain inf or NaN (overflow from "
                                        "huge --event-weights?); use smaller event weights")
        if self.checkpoint is not None:
            self._identity = run_identity(self.config, targets)
        run = self._open(self.main_stage(targets.shape[0]), self.validator)  # before any work
        fresh = encoder is None  # a spectral start built here is itself a candidate model
        encoder = self.build_encoder(targets) if fresh else encoder
        objective = build_objective(targets, self.config, self.device)
        result = self._run(encoder, objective, run, score_start=fresh)
        result.seconds = time.perf_counter() - started
        return result

    def run(self, model: torch.nn.Module, task: Task, stage: Stage,
            validator: Validator | None = None, score_start: bool = False,
            rng: np.random.Generator | None = None,
            parameters: Iterable[torch.nn.Parameter] | None = None) -> TrainingResult:
        """Train ``model`` on ``task`` as ``stage``; with a validator the best evaluated state
        (the start too, when ``score_start``) is kept. ``parameters``: the ones to train (all
        by default); ``rng``: the batch order's generator (a fresh one from the seed)."""
        started = time.perf_counter()
        result = self._run(model, task, self._open(stage, validator), score_start, rng,
                           parameters)
        result.seconds = time.perf_counter() - started
        return result

    def _run(self, model, task: Task, run: _Run, score_start: bool,
             rng: np.random.Generator | None = None, parameters=None) -> TrainingResult:
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        model = self.context.prepare(model.to(self.device))
        if parameters is None and isinstance(model, ItemEncoder):
            model.item_embedding.sparse = run.stage.sparse
        stage = run.stage
        optimiser = adam(list(model.parameters() if parameters is None else parameters),
                         stage.lr, stage.weight_decay, stage.sparse)
        rng = np.random.default_rng(self.config.seed) if rng is None else rng
        run.per_epoch = len(task)
        return self._loop(model, task, optimiser, rng, run, score_start)

    def _loop(self, model, task: Task, optimiser, rng: np.random.Generator, run: _Run,
              score_start: bool) -> TrainingResult:
        stage, result = run.stage, TrainingResult(encoder=model)
        best_state, stale, first = copy.deepcopy(model.state_dict()), 0, 1
        if run.resumed is not None:
            best_state, stale, first = self._restore(run.resumed, model, optimiser, rng, result,
                                                     run)
        elif score_start and run.validator is not None:
            self._score_start(model, result, run)
        bar = tqdm(range(first, stage.epochs + 1), desc=stage.name, unit="epoch",
                   initial=first - 1, total=stage.epochs, disable=not self.progress, leave=False)
        for epoch in bar:
            record = {"epoch": epoch, "loss": self._epoch(model, task, optimiser, rng, epoch,
                                                          stage)}
            if run.validator is not None and (epoch % stage.eval_every == 0
                                              or epoch == stage.epochs):
                score = record["validation"] = run.validator(model)
                if improves(score, result, stage.margin):
                    result.best_score, result.best_epoch = score, epoch
                    best_state, stale = copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
            self._report(record, result, bar, stage)
            stop = self._patience_spent(stale, epoch, result.best_epoch, run)
            if run.checkpoint is not None and run.checkpoint.due(
                    final=stop or epoch == stage.epochs):
                self._save(epoch, model, optimiser, rng, result, best_state, stale, run)
            if stop:
                logger.info("%s: early stop at epoch %d (best %d)", stage.name, epoch,
                            result.best_epoch)
                break
        if run.validator is not None:
            model.load_state_dict(best_state)
        elif result.history:
            result.best_epoch = result.history[-1]["epoch"]
        return result

    def _score_start(self, model, result: TrainingResult, run: _Run) -> None:
        """Epoch 0: the start (spectral, or the previous stage's model) is often near the
        optimum, and training only has to beat it."""
        result.best_score, result.best_epoch = run.validator(model), 0
        self._report({"epoch": 0, "validation": result.best_score}, result, None, run.stage)

    def _report(self, record: dict, result: TrainingResult, bar, stage: Stage) -> None:
        result.history.append(record)
        for callback in self.callbacks:
            callback({"stage": stage.name, **record})
        if bar is not None:
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        logger.info("%s epoch %d: %s", stage.name, record["epoch"], record)

    def _patience_spent(self, stale: int, epoch: int, best_epoch: int, run: _Run) -> bool:
        stage = run.stage
        return patience_spent(stale, epoch - best_epoch, run.per_epoch, stage.patience,
                              stage.patience_batches)

    # -- checkpoints: taken at epoch ends, so the numpy RNG state alone fixes every later batch --
    def _open(self, stage: Stage, validator: Validator | None) -> _Run:
        """The stage's run, its checkpoint opened (and refused here if it does not match)."""
        validator = self.context.shared(validator) if validator is not None else None
        if self.checkpoint is None and self.resume:
            raise ItemvecError("resume asked for, but no checkpoint location is configured")
        if self.checkpoint is None or not stage.checkpointed:
            return _Run(stage, validator, None)
        if self._identity is None:
            self._identity = run_identity(self.config, None)
        later = {} if stage.name == COOCCURRENCE else {"stage": stage.name}
        run = _Run(stage, validator, self.checkpoint.for_stage(stage.name),
                   {**self._identity, **later})
        if not self.resume and run.checkpoint.exists():
            logger.warning("starting over: the checkpoint at %s will be replaced (pass "
                           "--resume to continue it instead)", run.checkpoint.path)
        run.resumed = self._load(run) if self.resume else None
        return run

    def _load(self, run: _Run) -> TrainingState | None:
        if run.stage.name != COOCCURRENCE and not run.checkpoint.exists():
            logger.info("%s: no checkpoint (not reached before the interruption); starting it",
                        run.stage.name)
            return None
        state = run.checkpoint.load()
        run.checkpoint.validate(state, run.identity)
        logger.warning("%s: resuming from %s after epoch %d of %d", run.stage.name,
                       run.checkpoint.path, state.epoch, run.stage.epochs)
        return state

    def _save(self, epoch, model, optimiser, rng, result, best_state, stale, run: _Run) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        state = TrainingState(
            epoch=epoch, encoder=model.state_dict(), optimiser=optimiser.state_dict(),
            numpy_rng=rng.bit_generator.state, torch_rng=torch.get_rng_state(), cuda_rng=cuda,
            best=best_state if run.validator is not None else None,
            best_score=result.best_score, best_epoch=result.best_epoch, stale=stale,
            history=result.history, identity=run.identity)
        try:
            run.checkpoint.save(state)
        except OSError as exc:  # disk full, say: a lost checkpoint must not cost the whole run
            logger.warning("could not write checkpoint %s (%s); training goes on, the previous "
                           "checkpoint (if any) is intact", run.checkpoint.path, exc)

    def _restore(self, state: TrainingState, model, optimiser, rng, result: TrainingResult,
                 run: _Run) -> tuple[dict, int, int]:
        """Put every piece of ``state`` back; returns (best weights, stale count, next epoch)."""
        model.load_state_dict(state.encoder)
        optimiser.load_state_dict(state.optimiser)
        rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng and torch.cuda.is_available() \
                and len(state.cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state.cuda_rng)
        result.history = list(state.history)
        result.best_score, result.best_epoch = state.best_score, state.best_epoch
        best = state.best if state.best is not None else copy.deepcopy(model.state_dict())
        best = {k: v.to(self.device) for k, v in best.items()}
        epochs = run.stage.epochs
        done = (self._patience_spent(state.stale, state.epoch, state.best_epoch, run)
                or state.epoch >= epochs)
        return best, state.stale, epochs + 1 if done else state.epoch + 1

    def sparse_updates(self, n_items: int) -> bool:
        return not self.context.dense_only and use_sparse_updates(self.config, n_items)

    # the context's hooks (kept as methods: a test may count or capture them)
    def shard(self, batch):
        return self.context.shard(batch)

    def after_backward(self, model: torch.nn.Module) -> None:
        self.context.after_backward(model)

    def _epoch(self, model, task: Task, optimiser, rng, epoch: int, stage: Stage) -> float:
        """One pass; with ``accumulate`` > 1 the optimiser steps once per that many batches
        (and once more for a remainder at the end of the epoch), on the mean of their losses."""
        model.train()
        total, steps, every = 0.0, 0, self.config.accumulate
        n_batches = len(task)
        optimiser.zero_grad(set_to_none=True)
        batches = tqdm(task.batches(rng), total=n_batches, desc=f"{stage.name} epoch {epoch}",
                       unit="step", leave=False,
                       disable=not self.progress or n_batches < LONG_EPOCH_STEPS)
        for steps, batch in enumerate(batches, start=1):
            with self._autocast():
                loss = task.loss(model, self.shard(batch))
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"{stage.name} stage: loss became {loss.item()} at epoch {epoch}, step "
                    f"{steps}; lower {stage.lr_field} or raise training.temperature")
            scaled = loss / min(every, n_batches - (steps - 1) // every * every)
            (self._scaler.scale(scaled) if self._scaler is not None else scaled).backward()
            if steps % every == 0 or steps == n_batches:
                self._step(model, optimiser, epoch, steps, stage)
            total += loss.item()
        model.eval()
        check_finite(model, epoch, steps, stage)
        return self.context.mean(total / max(steps, 1))

    def _step(self, model, optimiser, epoch: int, steps: int, stage: Stage) -> None:
        self.after_backward(model)
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
                f"{stage.name} stage: optimiser step overflowed at epoch {epoch}, step {steps}; "
                f"lower {stage.lr_field} (now {stage.lr})") from None
        optimiser.zero_grad(set_to_none=True)

    def _autocast(self):
        """Mixed precision: matmuls in bf16/fp16, reductions (log-softmax) kept in fp32."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)


def check_finite(model: torch.nn.Module, epoch: int, steps: int, stage: Stage) -> None:
    """The loss check sees bad weights one step late; never checkpoint or export them."""
    for name, value in model.state_dict().items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise TrainingDivergedError(f"{stage.name} stage: weights {name} became inf or NaN "
                                        f"in epoch {epoch}, step {steps}; lower {stage.lr_field}")
