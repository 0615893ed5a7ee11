"""Epoch trackers: the JSON-lines log (always available) and TensorBoard (optional package)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from itemvec.config import TrainingConfig
from itemvec.data.synth import generate, write
from itemvec.train.tracking import JSON_LOG_NAME, JsonLog, TensorBoardLog, json_log_path, make_trackers
from itemvec.train.trainer import Trainer
from itemvec.util.errors import ItemvecError


def block_matrix(n: int = 40, blocks: int = 4, seed: int = 0) -> sp.csr_matrix:
    """Co-occurrence counts with planted blocks: items pair up inside their block."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % blocks
    dense = (group[:, None] == group[None, :]) * rng.integers(1, 10, size=(n, n))
    dense = np.triu(dense, 1)
    return sp.csr_matrix((dense + dense.T).astype(np.float32))


def fit(callbacks, epochs: int = 3):
    config = TrainingConfig(epochs=epochs, dim=8, batch_size=16, device="cpu")
    return Trainer(config, progress=False, callbacks=callbacks).fit(block_matrix())


def test_json_log_has_one_line_per_epoch_matching_the_history(tmp_path):
    log = JsonLog(tmp_path / "run.jsonl")
    result = fit([log])
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in result.history])
    assert all(r["seconds"] >= 0 for r in records)
    assert records[-1]["seconds"] >= records[0]["seconds"]
    # written atomically: nothing but the log is left in the directory
    assert [p.name for p in tmp_path.iterdir()] == ["run.jsonl"]


def test_json_log_path_for_a_directory(tmp_path):
    assert json_log_path(tmp_path) == tmp_path / JSON_LOG_NAME
    assert json_log_path(tmp_path / "logs") == tmp_path / "logs" / JSON_LOG_NAME
    assert json_log_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"
    assert make_trackers() == []


def test_tensorboard_needs_its_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ItemvecError, match=r"itemvec\[track\]"):
        TensorBoardLog(tmp_path / "tb")


def test_tensorboard_scalars_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoardLog(tmp_path / "tb") as board:
        result = fit([board], epochs=4)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in result.history])


def test_train_command_writes_the_json_log(tmp_path, cli):
    events, items = write(generate(3000, 60, n_categories=4, seed=1), tmp_path / "ev.csv")
    code, out, err = cli(["train", events, "--time", "ts", "--items", items, "--out",
                          tmp_path / "model", "--epochs", "4", "--dim", "8", "--device", "cpu",
                          "--log-json", tmp_path / "logs", "--quiet"])
    assert code == 0, err
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    records = [json.loads(line) for line in
               (tmp_path / "logs" / JSON_LOG_NAME).read_text().splitlines()]
    history = manifest["stats"]["history"]
    main = [r for r in records if r["stage"] == "cooccurrence"]
    assert [r["epoch"] for r in main] == [h["epoch"] for h in history]
    assert [r.get("validation") for r in main] == [h.get("validation") for h in history]
    # the later stages run through the same trainer, so their epochs are logged too
    tuned = manifest["stats"]["history_finetune"]
    assert [r["epoch"] for r in records if r["stage"] == "histories-probe"] == [0, 1]
    assert sum(r["stage"].startswith("histories") and "loss" in r for r in records) == \
        tuned["epochs_run"]
    assert any(r["stage"] == "coldstart" for r in records)
