"""Checkpoints: exact round trip, atomic saves, clear refusals, and bit-identical resume in-process.

The subprocess ``kill -9`` test lives in ``test_faults.py``; here interruption is simulated with a
callback that raises, which stops the loop at the same place a kill would (after an epoch's
checkpoint, or mid-way through the next epoch).
"""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from itemvec.config import TrainingConfig
from itemvec.store.bundle import CHECKPOINT_DIRNAME
from itemvec.train.checkpoint import (
    FILENAME,
    CheckpointError,
    CheckpointManager,
    data_fingerprint,
    manager_for,
    run_identity,
)
from itemvec.train.trainer import Trainer
from itemvec.util.errors import ConfigError

EPOCHS = 6


class Interrupt(Exception):
    """Stands in for a crash at a chosen epoch."""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> sp.csr_matrix:
    """Co-occurrence counts of a small synthetic shop (fast: each epoch is a few milliseconds)."""
    from itemvec.config import CooccurrenceConfig, IngestConfig
    from itemvec.counting.cooccurrence import count_pairs
    from itemvec.data.ingest import read_events
    from itemvec.data.synth import generate, write

    events, _ = write(generate(6000, 150, n_categories=6, seed=1),
                      tmp_path_factory.mktemp("ckpt") / "events.csv")
    log = read_events(events, IngestConfig(context="session_id", item="item_id", time="ts"))
    return count_pairs(log, CooccurrenceConfig())


def config(**overrides) -> TrainingConfig:
    base = dict(device="cpu", epochs=EPOCHS, dim=16, hidden=8, eval_every=1, patience=2,
                patience_batches=0, checkpoint_every=0)
    return TrainingConfig(**{**base, **overrides})


def fake_validator(scores: list[float]):
    """Deterministic scores per call, so early-stopping state (best, stale) is exercised."""
    calls = iter(scores)
    return lambda encoder: next(calls)


def stop_at(epoch: int):
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupt(epoch)
    return callback


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.encoder.state_dict().items()}


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(matrix):
    trainer = Trainer(config(), progress=False)
    return trainer.fit(matrix)


def test_resume_after_interruption_is_bit_identical(matrix, uninterrupted, tmp_path):
    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(Interrupt):  # dies in epoch 4, after epoch 3's checkpoint
        Trainer(config(), progress=False, callbacks=[stop_at(4)], checkpoint=manager).fit(matrix)
    assert manager.load().epoch == 3
    resumed = Trainer(config(), progress=False, checkpoint=CheckpointManager(tmp_path / "ck"),
                      resume=True).fit(matrix)
    assert_identical(weights(resumed), weights(uninterrupted))
    assert resumed.history == uninterrupted.history  # losses of epochs 1-3 restored, 4-6 recomputed
    assert [r["epoch"] for r in resumed.history] == list(range(1, EPOCHS + 1))


def test_resume_restores_early_stopping_state(matrix, tmp_path):
    # scores: the start (epoch 0), then best at epoch 2, stale 1, 2 -> early stop after epoch 4
    scores = [0.05, 0.1, 0.5, 0.4, 0.3, 0.9, 0.9]
    full = Trainer(config(), fake_validator(scores), progress=False).fit(matrix)
    assert (full.best_epoch, [r["epoch"] for r in full.history]) == (2, [0, 1, 2, 3, 4])

    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(Interrupt):
        Trainer(config(), fake_validator(scores), progress=False, callbacks=[stop_at(4)],
                checkpoint=manager).fit(matrix)
    state = manager.load()
    assert (state.epoch, state.best_epoch, state.best_score, state.stale) == (3, 2, 0.5, 1)
    assert state.best is not None and not torch.equal(state.best["item_embedding.weight"],
                                                      state.encoder["item_embedding.weight"])
    resumed = Trainer(config(), fake_validator(scores[4:]), progress=False, checkpoint=manager,
                      resume=True).fit(matrix)
    assert (resumed.best_epoch, resumed.best_score) == (2, 0.5)
    assert resumed.history == full.history  # stopped at the same epoch, not at 5 or 6
    assert_identical(weights(resumed), weights(full))  # the best (epoch 2) weights come back


def test_resume_of_a_finished_run_trains_nothing_more(matrix, uninterrupted, tmp_path):
    manager = CheckpointManager(tmp_path / "ck", every=3600)  # only the final save is due
    Trainer(config(), progress=False, checkpoint=manager).fit(matrix)
    assert manager.load().epoch == EPOCHS
    never = Trainer(config(), progress=False, callbacks=[stop_at(1), stop_at(EPOCHS)],
                    checkpoint=manager, resume=True).fit(matrix)  # a callback would raise
    assert_identical(weights(never), weights(uninterrupted))


def test_round_trip_keeps_every_piece(matrix, tmp_path):
    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(Interrupt):
        Trainer(config(), progress=False, callbacks=[stop_at(2)], checkpoint=manager).fit(matrix)
    state = manager.load()
    assert state.epoch == 1 and state.identity == run_identity(config(), matrix)
    assert state.numpy_rng["bit_generator"] == "PCG64"
    assert state.torch_rng.dtype == torch.uint8
    adam = state.optimiser
    assert adam["param_groups"][0]["betas"] == (0.9, 0.999)
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(adam["state"][0])
    rows = int((np.diff(matrix.indptr) > 0).sum())
    assert float(adam["state"][0]["step"]) == -(-rows // config().batch_size)  # one epoch of steps
    raw = (tmp_path / "ck" / FILENAME).read_bytes()  # plain safetensors: JSON header, no pickle
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert "itemvec_checkpoint" in header["__metadata__"]


@pytest.mark.parametrize("change,field", [(dict(lr=0.02), "lr"), (dict(dim=8), "dim"),
                                          (dict(seed=1), "seed")])
def test_resume_refuses_other_settings(matrix, tmp_path, change, field):
    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(Interrupt):
        Trainer(config(), progress=False, callbacks=[stop_at(2)], checkpoint=manager).fit(matrix)
    with pytest.raises(CheckpointError, match=rf"training\.{field}="):
        Trainer(config(**change), progress=False, checkpoint=manager, resume=True).fit(matrix)


def test_resume_ignores_device_threads_and_interval(matrix, tmp_path):
    a = run_identity(config(), matrix)
    b = run_identity(config(threads=1, checkpoint_every=600, checkpoint_dir="x"), matrix)
    assert a == b


def test_resume_refuses_other_data(matrix, tmp_path):
    manager = CheckpointManager(tmp_path / "ck", every=0)
    Trainer(config(epochs=1), progress=False, checkpoint=manager).fit(matrix)
    other = matrix.copy()
    other.data = other.data * 2
    with pytest.raises(CheckpointError, match="different data"):
        Trainer(config(epochs=1), progress=False, checkpoint=manager, resume=True).fit(other)


def test_fingerprint_sees_values_not_only_shape(matrix):
    other = matrix.copy()
    other.data[0] += 1
    assert data_fingerprint(other)["nnz"] == data_fingerprint(matrix)["nnz"]
    assert data_fingerprint(other)["sha256"] != data_fingerprint(matrix)["sha256"]
    assert data_fingerprint(matrix) == data_fingerprint(matrix.tocoo())


@pytest.fixture
def saved(matrix, tmp_path) -> CheckpointManager:
    manager = CheckpointManager(tmp_path / "ck", every=0)
    Trainer(config(epochs=1), progress=False, checkpoint=manager).fit(matrix)
    return manager


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*train without --resume"):
        CheckpointManager(tmp_path / "nothing").load()


@pytest.mark.parametrize("keep", [0, 7, 100, -100])
def test_truncated_checkpoint_is_a_clear_error(saved, keep):
    raw = saved.path.read_bytes()
    saved.path.write_bytes(raw[:keep] if keep >= 0 else raw[:keep])
    with pytest.raises(CheckpointError, match="corrupt|truncated|not an itemvec"):
        saved.load()


def test_flipped_byte_is_caught_by_the_checksum(saved):
    raw = bytearray(saved.path.read_bytes())
    raw[-5] ^= 0xFF  # inside the tensor data: the format alone would not notice
    saved.path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        saved.load()


def _rewrite_metadata(path, edit) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["itemvec_checkpoint"])
    edit(meta)
    save_file(load_file(str(path)), str(path), metadata={"itemvec_checkpoint": json.dumps(meta)})


def test_newer_format_version_is_refused(saved):
    _rewrite_metadata(saved.path, lambda meta: meta.update(format_version=99))
    with pytest.raises(CheckpointError, match="version 99 is newer.*upgrade itemvec"):
        saved.load()


def test_foreign_safetensors_file_is_refused(saved):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, str(saved.path))
    with pytest.raises(CheckpointError, match="not an itemvec checkpoint"):
        saved.load()


def test_save_is_atomic_when_the_write_fails(saved, monkeypatch):
    before = saved.path.read_bytes()
    state = saved.load()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("itemvec.util.files.os.replace", broken_replace)
    # still an OSError (the trainer warns and trains on), now naming the file and its size
    with pytest.raises(OSError, match=r"checkpoint\.safetensors: no space left on device "
                                      r"writing it \(needs about"):
        saved.save(dataclasses.replace(state, epoch=state.epoch + 1))
    assert saved.path.read_bytes() == before  # previous checkpoint untouched
    assert [p.name for p in saved.directory.iterdir()] == [FILENAME]  # temp file cleaned up


def test_clear_removes_only_its_own_files(saved):
    keep = saved.directory / "notes.txt"
    keep.write_text("user file")
    saved.clear()
    assert not saved.exists() and keep.read_text() == "user file"
    keep.unlink()
    saved.clear()  # idempotent, removes the now-empty directory
    assert not saved.directory.exists()


def test_due_honours_the_interval():
    assert CheckpointManager("x", every=0).due()
    hourly = CheckpointManager("x", every=3600)
    assert not hourly.due() and hourly.due(final=True)


def test_manager_locations(tmp_path):
    out = tmp_path / "model"
    assert manager_for(config(checkpoint_every=None), out) is None
    assert manager_for(config(), out).directory == out / CHECKPOINT_DIRNAME
    assert manager_for(config(checkpoint_dir=str(tmp_path / "ck")), out).directory == tmp_path / "ck"
    with pytest.raises(ConfigError, match="inside --out"):
        manager_for(config(checkpoint_dir=str(out / "ck")), out)
    with pytest.raises(ConfigError, match="--resume needs --checkpoint-every"):
        manager_for(config(checkpoint_every=None), out, resume=True)
    with pytest.raises(ConfigError, match="needs --out or --checkpoint-dir"):
        manager_for(config(), None)


@pytest.mark.parametrize("value,message", [
    ("-1", "training.checkpoint_every must be a duration"),
    ("soon", "training.checkpoint_every must be a duration"),
    (float("nan"), "training.checkpoint_every must be >= 0"),
])
def test_bad_interval_names_field_value_and_fix(value, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(checkpoint_every=value)


def test_interval_accepts_durations():
    assert TrainingConfig(checkpoint_every="10m").checkpoint_every == 600
    assert TrainingConfig(checkpoint_every=0).checkpoint_every == 0
    with pytest.raises(ConfigError, match="checkpoint_dir needs training.checkpoint_every"):
        TrainingConfig(checkpoint_dir="somewhere")
