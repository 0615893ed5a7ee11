"""Resumable training checkpoints: one safetensors file, written atomically, loaded without pickle.

A checkpoint holds everything the trainer needs to continue exactly where it stopped: encoder
weights, the optimiser's moment tensors, the best weights seen so far, the numpy and torch RNG
states, the last finished epoch and the early-stopping state (best score, best epoch, stale count,
history). It is taken at an epoch boundary, so a resumed run draws the same batches as an
uninterrupted one and, on the same machine and thread count, ends with bit-identical weights.

Everything lives in ONE file (tensors in safetensors, the rest as JSON in its header metadata),
so one rename makes a save atomic: a kill at any moment leaves the previous checkpoint or the new
one, never a mix. The metadata also records what the run was (training config, a fingerprint of
the co-occurrence matrix) so ``--resume`` refuses a checkpoint from a different run.

Where: ``DIR/.checkpoint/`` for ``itemvec train --out DIR`` (or ``--checkpoint-dir``). The bundle
writer ignores that folder when it checks ``--out``, and the final bundle swap removes it: a
checkpoint exists only while a run is unfinished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from itemvec.config import TrainingConfig
from itemvec.store.bundle import CHECKPOINT_DIRNAME
from itemvec.util.errors import ConfigError, ItemvecError
from itemvec.util.files import atomic_write_bytes, fsync_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILENAME = "checkpoint.safetensors"
METADATA_KEY = "itemvec_checkpoint"
# Settings that do not change what is computed: a run may resume with different values.
UNTRACKED_FIELDS = ("device", "threads", "checkpoint_every", "checkpoint_dir")


class CheckpointError(ItemvecError):
    """A checkpoint is missing, corrupt, from a newer itemvec, or from a different run."""


@dataclass
class TrainingState:
    """The trainer's state at the end of ``epoch``: enough to continue bit-identically."""

    epoch: int
    encoder: dict[str, torch.Tensor]
    optimiser: dict[str, Any]  # torch ``Optimizer.state_dict()``
    numpy_rng: dict[str, Any]  # ``Generator.bit_generator.state``
    torch_rng: torch.Tensor
    best: dict[str, torch.Tensor] | None = None  # best weights so far (early stopping)
    best_score: float | None = None
    best_epoch: int = 0
    stale: int = 0
    history: list[dict] = field(default_factory=list)
    cuda_rng: list[torch.Tensor] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)


# -- identity: which run a checkpoint belongs to -------------------------------------------------
def config_identity(config: TrainingConfig) -> dict[str, Any]:
    """The training settings that shape the result (not device, threads or checkpoint options)."""
    values = {k: v for k, v in config.to_dict().items() if k not in UNTRACKED_FIELDS}
    return json.loads(json.dumps(values, default=str))


def data_fingerprint(matrix: sp.spmatrix) -> dict[str, Any]:
    """Items, non-zeros and a SHA-256 of the CSR arrays of the training matrix."""
    csr = matrix.tocsr()
    if not csr.has_sorted_indices:
        csr = csr.sorted_indices()
    digest = hashlib.sha256()
    for part in (csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update(str(csr.data.dtype).encode())
    return {"items": int(csr.shape[0]), "nnz": int(csr.nnz), "sha256": digest.hexdigest()}


def run_identity(config: TrainingConfig, matrix: sp.spmatrix | None) -> dict[str, Any]:
    """Settings and data of a run (no matrix: a stage trained on something else; data {})."""
    config_part = config_identity(config)
    config_hash = hashlib.sha256(json.dumps(config_part, sort_keys=True).encode()).hexdigest()
    data = data_fingerprint(matrix) if matrix is not None else {}
    return {"config": config_part, "config_sha256": config_hash, "data": data}


def stage_filename(stage: str) -> str:
    """The co-occurrence stage keeps ``FILENAME``; a later stage gets its own file beside it."""
    return FILENAME if stage == "cooccurrence" else f"checkpoint-{stage}.safetensors"


# -- the manager -----------------------------------------------------------------------------------
class CheckpointManager:
    """Saves and loads one run's checkpoint in ``directory``; ``every`` seconds between saves."""

    def __init__(self, directory: str | Path, every: float = 0.0,
                 filename: str = FILENAME) -> None:
        self.directory = Path(directory)
        self.every = float(every)
        self.filename = filename
        self.last_save = time.monotonic()

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    def for_stage(self, stage: str) -> CheckpointManager:
        """The manager of ``stage``'s file in the same directory, at the same interval."""
        manager = CheckpointManager(self.directory, self.every, stage_filename(stage))
        manager.last_save = self.last_save
        return manager

    def exists(self) -> bool:
        return self.path.is_file()

    def due(self, final: bool = False) -> bool:
        """Time for a save? Always at the last epoch, so a crash while writing the bundle is cheap."""
        return final or self.every <= 0 or time.monotonic() - self.last_save >= self.every

    def save(self, state: TrainingState) -> Path:
        """Write ``state`` to a temp file, fsync, rename over the previous checkpoint."""
        tensors, meta = _flatten(state)
        meta["checksum"] = _tensor_checksum(tensors)
        payload = save(tensors, metadata={METADATA_KEY: json.dumps(meta, default=_json_default)})
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, payload)
        fsync_path(self.directory)
        self.last_save = time.monotonic()
        logger.debug("checkpoint after epoch %d -> %s", state.epoch, self.path)
        return self.path

    def load(self) -> TrainingState:
        """Read the checkpoint; a missing, truncated, corrupt or newer one is a clear error."""
        if not self.exists():
            raise CheckpointError(f"--resume: no checkpoint at {self.path}; the run finished or "
                                  "never saved one; train without --resume to start over")
        tensors, meta = self._read()
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{self.path}: checkpoint format version {version!r} is newer than "
                                  f"this itemvec reads (<= {FORMAT_VERSION}); upgrade itemvec")
        if _tensor_checksum(tensors) != meta.get("checksum"):
            raise CheckpointError(f"{self.path}: checksum mismatch, the checkpoint is corrupt; "
                                  "delete it and train without --resume")
        try:
            return _unflatten(tensors, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: malformed checkpoint ({exc!r}); delete it and "
                                  "train without --resume") from None

    def _read(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get(METADATA_KEY)
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            meta = json.loads(raw) if raw is not None else None
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: unreadable checkpoint, corrupt or truncated "
                                  f"({exc}); delete it and train without --resume") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{self.path}: not an itemvec checkpoint (no {METADATA_KEY} "
                                  "metadata); delete it or point --checkpoint-dir elsewhere")
        return tensors, meta

    def validate(self, state: TrainingState, identity: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint made with other settings or other data."""
        saved, current = state.identity.get("config", {}), identity["config"]
        for name in sorted(set(saved) | set(current)):
            if saved.get(name, "<absent>") != current.get(name, "<absent>"):
                raise CheckpointError(
                    f"--resume: checkpoint {self.path} was written with training.{name}="
                    f"{saved.get(name, '<absent>')!r} but this run has "
                    f"{current.get(name, '<absent>')!r}; resume with the same options, or drop "
                    "--resume to start over")
        if state.identity.get("data") != identity["data"]:
            old, new = state.identity.get("data") or {}, identity["data"]
            raise CheckpointError(
                f"--resume: checkpoint {self.path} was made from different data (items "
                f"{old.get('items')}, pairs {old.get('nnz')}; now items {new['items']}, pairs "
                f"{new['nnz']}); resume on the same events and options, or drop --resume")

    def clear(self) -> None:
        """Remove the run's checkpoints (every stage's file, only ours) and the directory if
        that leaves it empty."""
        stem = FILENAME.split(".")[0]
        for pattern in (FILENAME, f"{stem}-*.safetensors", f".{stem}*.safetensors.*"):
            for path in self.directory.glob(pattern):  # dot-files: temp files of a killed save
                path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass


def manager_for(config: TrainingConfig, out: str | Path | None,
                resume: bool = False) -> CheckpointManager | None:
    """The manager ``itemvec train`` uses: DIR/.checkpoint unless training.checkpoint_dir is set."""
    if config.checkpoint_every is None:
        if resume:
            raise ConfigError("--resume needs --checkpoint-every (give the same options as the "
                              "interrupted run)")
        return None
    if config.checkpoint_dir is not None:
        directory = Path(config.checkpoint_dir)
        if out is not None and _inside(directory, Path(out)):
            raise ConfigError(f"training.checkpoint_dir {str(directory)!r} is inside --out {out}, "
                              "which the finished bundle replaces; leave --checkpoint-dir out to "
                              f"use {Path(out) / CHECKPOINT_DIRNAME} or choose a path outside")
    elif out is not None:
        directory = Path(out) / CHECKPOINT_DIRNAME
    else:
        raise ConfigError("training.checkpoint_every needs --out or --checkpoint-dir to know "
                          "where to keep the checkpoint")
    return CheckpointManager(directory, every=config.checkpoint_every)


def _inside(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents


# -- (de)serialisation -----------------------------------------------------------------------------
def _flatten(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        tensors[key] = value.detach().cpu().clone().contiguous()

    for name, value in state.encoder.items():
        put(f"encoder.{name}", value)
    for name, value in (state.best or {}).items():
        put(f"best.{name}", value)
    put("rng.torch", state.torch_rng)
    for i, value in enumerate(state.cuda_rng):
        put(f"rng.cuda.{i}", value)
    optimiser_state = {}
    for index, entry in state.optimiser["state"].items():
        plain = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                put(f"optimiser.{index}.{name}", value)
            else:
                plain[name] = value
        optimiser_state[str(index)] = {"values": plain,
                                       "tensors": sorted(k for k, v in entry.items()
                                                         if torch.is_tensor(v))}
    meta = {
        "format_version": FORMAT_VERSION, "epoch": state.epoch,
        "encoder_keys": list(state.encoder), "best_keys": list(state.best or {}),
        "has_best": state.best is not None, "cuda_rng": len(state.cuda_rng),
        "optimiser": {"state": optimiser_state, "param_groups": state.optimiser["param_groups"]},
        "numpy_rng": state.numpy_rng, "best_score": state.best_score,
        "best_epoch": state.best_epoch, "stale": state.stale, "history": state.history,
        "identity": state.identity,
    }
    return tensors, meta


def _unflatten(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainingState:
    optimiser = {"state": {}, "param_groups": []}
    for index, entry in meta["optimiser"]["state"].items():
        values = dict(entry["values"])
        values.update({name: tensors[f"optimiser.{index}.{name}"] for name in entry["tensors"]})
        optimiser["state"][int(index)] = values
    for group in meta["optimiser"]["param_groups"]:
        optimiser["param_groups"].append({k: tuple(v) if isinstance(v, list) and k != "params"
                                          else v for k, v in group.items()})
    return TrainingState(
        epoch=int(meta["epoch"]),
        encoder={name: tensors[f"encoder.{name}"] for name in meta["encoder_keys"]},
        optimiser=optimiser, numpy_rng=meta["numpy_rng"], torch_rng=tensors["rng.torch"],
        best={name: tensors[f"best.{name}"] for name in meta["best_keys"]}
        if meta["has_best"] else None,
        best_score=meta["best_score"], best_epoch=int(meta["best_epoch"]),
        stale=int(meta["stale"]), history=list(meta["history"]),
        cuda_rng=[tensors[f"rng.cuda.{i}"] for i in range(int(meta["cuda_rng"]))],
        identity=meta["identity"],
    )


def _tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: catches bit rot the format itself would not."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")
