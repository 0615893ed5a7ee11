"""``itemvec tune`` end to end: the issue's contract, resuming, the missing extra, bad spaces."""

from __future__ import annotations

import json
import sys

import pytest

from itemvec.config import load_config
from itemvec.data.synth import generate
from itemvec.query.embeddings import load_embeddings

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """A small log with the columns named c, i, t as in the contract."""
    shop = generate(3000, 80, n_categories=8, seed=1)
    path = tmp_path_factory.mktemp("tune") / "events.csv"
    shop.events.rename({"session_id": "c", "item_id": "i", "ts": "t"}).write_csv(path)
    return path


def test_the_contract_writes_a_bundle_and_a_second_run_continues_the_study(events, tmp_path,
                                                                          cli):
    storage, out = f"sqlite:///{tmp_path / 'T.db'}", tmp_path / "D"
    command = ["tune", events, "--context", "c", "--item", "i", "--time", "t", "--trials", "4",
               "--storage", storage, "--out", out, "--epochs", "4", "--quiet"]
    code, stdout, stderr = cli(command)
    assert code == 0, stderr
    assert sum(line.startswith("trial ") for line in stdout.splitlines()) == 4
    assert "study itemvec: 4 finished trials" in stdout
    embeddings = load_embeddings(out)  # a loadable bundle ...
    config = load_config(out / "best_config.json")  # ... with a config train --config takes
    assert (config.ingest.context, config.ingest.item, config.training.epochs) == ("c", "i", 4)
    assert embeddings.dim == config.training.dim  # the bundle is the winner's
    summary = json.loads((out / "tuning.json").read_text())
    assert config.training.dim == summary["best_params"]["dim"]
    page = (out / "tuning.html").read_text()
    assert "<svg" in page and "Optimisation history" in page and "http" not in page

    code, stdout, stderr = cli(command)
    assert code == 0, stderr
    study = optuna.load_study(study_name="itemvec", storage=storage)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 8


def test_without_optuna_tune_names_the_extra(events, tmp_path, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the [tune] extra were absent
    code, _, stderr = cli(["tune", events, "--context", "c", "--item", "i", "--out",
                           tmp_path / "D"])
    assert code == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        "error: this command needs optuna, which is not installed; pip install 'itemvec[tune]'"]
    assert not (tmp_path / "D").exists()


def test_a_bad_space_file_is_one_line(events, tmp_path, cli):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"dim": {"low": 1, "high": 8}}))
    code, _, stderr = cli(["tune", events, "--context", "c", "--item", "i", "--space", space,
                           "--out", tmp_path / "D"])
    assert code == 2
    assert stderr.strip().splitlines() == ["error: space.dim: training.dim must be >= 2, got 1"]


def test_every_searched_setting_fixed_is_an_error(events, tmp_path, cli):
    only_dim = {name: None for name in ("temperature", "lr", "window", "distance_weighting",
                                        "target_power", "row_weight_power", "history_epochs")}
    space = tmp_path / "space.json"
    space.write_text(json.dumps({**only_dim, "dim": {"choices": [8, 16]}}))
    code, _, stderr = cli(["tune", events, "--context", "c", "--item", "i", "--space", space,
                           "--dim", "32", "--out", tmp_path / "D"])
    assert code == 2 and "nothing to search" in stderr and len(stderr.strip().splitlines()) == 1

