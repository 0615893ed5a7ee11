"""Data-parallel training: ``torchrun --nproc_per_node N itemvec train ... --distributed``.

Every process reads the log, counts and builds the same objective (same seed, same batches);
each then scores only its slice of every batch (rows ``rank::world``), and after ``backward``
the gradients - the embedding table's included - are averaged across processes with one
all-reduce over a flat buffer, so all replicas take the same Adam step and stay identical
(rank 0's initial weights are broadcast first, to rule out drift). Validation (early stopping)
runs on rank 0 and its score is broadcast, so every rank stops at the same epoch; only rank 0
writes the bundle. All of this is one ``DistributedContext`` handed to ``Trainer(context=...)``
(``pipeline.train(..., context=...)``), so history fine-tuning and the cold-start tower run
data-parallel too: the trainer is given its behaviour, nothing is patched. Backend: NCCL on
CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU.

This is plain data parallelism: each process holds the whole embedding table and the all-reduce
moves ``items x dim`` floats per step, which is right up to a few million items. Beyond that
the table must be sharded (model parallelism, e.g. TorchRec); see docs/scaling.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from itemvec.config import PipelineConfig, TrainingConfig
from itemvec.train.pipeline import save_model
from itemvec.train.pipeline import train as pipeline_train
from itemvec.train.trainer import LocalContext, Trainer, Validator
from itemvec.util.errors import ConfigError

logger = logging.getLogger(__name__)


def launched() -> bool:
    """True inside ``torchrun`` (or anything else that sets the env:// rendezvous variables)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init(device: str = "auto") -> tuple[int, int, str]:
    """Join the process group from torchrun's environment; returns (rank, world, device)."""
    if not launched():
        raise ConfigError("--distributed needs torchrun: torchrun --nproc_per_node N "
                          "$(which itemvec) train ... --distributed")
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if use_cuda:
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), f"cuda:{local}" if use_cuda else "cpu"


class DistributedContext(LocalContext):
    """What ``Trainer(context=...)`` does differently across processes, for every stage:
    rank 0's start is broadcast, each rank scores rows ``rank::world`` of a batch, gradients
    are averaged, epoch losses too, and rank 0's validation score is everyone's."""

    dense_only = True  # gradients are all-reduced as one flat dense tensor

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise ConfigError("DistributedContext needs an initialised process group "
                              "(itemvec.train.distributed.init)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
        return model

    def shard(self, batch):
        if isinstance(batch, tuple):
            return tuple(part[self.rank::self.world] for part in batch)
        return batch[self.rank::self.world]

    def after_backward(self, model: torch.nn.Module) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=_device())
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def shared(self, validator: Validator) -> Validator:
        """Rank 0 scores; every rank gets its score, so early stopping agrees everywhere."""

        def shared(model) -> float:
            value = float(validator(model)) if self.rank == 0 else 0.0
            score = torch.tensor([value], dtype=torch.float64, device=_device())
            dist.broadcast(score, src=0)
            return float(score.item())

        return shared


def _device() -> torch.device:
    """Where collectives run: NCCL needs CUDA tensors, gloo takes CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class DistributedTrainer(Trainer):
    """``Trainer(config, ..., context=DistributedContext())``: batches split across processes."""

    def __init__(self, config: TrainingConfig, validator=None, progress: bool = True,
                 callbacks=(), **kwargs) -> None:
        super().__init__(config, validator, progress, callbacks,
                         context=DistributedContext(), **kwargs)


def train(events: str | Path, config: PipelineConfig, out: str | Path | None = None,
          **options):
    """``pipeline.train`` for ``itemvec train --distributed``: every rank trains, rank 0 writes."""
    rank, world, device = init(config.training.device)
    config = config.with_values({"training.device": device})
    logger.info("rank %d of %d on %s", rank, world, device)
    options["progress"] = options.get("progress", True) and rank == 0
    model = pipeline_train(events, config, out=None, context=DistributedContext(), **options)
    if rank == 0 and out is not None:
        save_model(model, out, config)
    dist.barrier()
    return model
