"""``--config`` (JSON or TOML) sets every option a flag sets; flags win; bad files fail first.

The option lists are the commands' own (``TRAIN_OPTIONS``, ``UPDATE_OPTIONS``), so a new option
without a value here fails ``test_every_option_is_covered``. Training itself is replaced by a
recorder where only the resolved config matters; one real run compares bundle manifests.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import itemvec.cli.options as options
import itemvec.cli.serve as serving
import itemvec.train.pipeline as pipeline
import itemvec.train.update as updating
from itemvec.cli.main import INGEST_OPTIONS, TRAIN_OPTIONS
from itemvec.cli.options import READ_OPTIONS, flag_of, help_of
from itemvec.cli.update import UPDATE_OPTIONS
from itemvec.config import PipelineConfig, field_info
from itemvec.data.synth import generate, write
from itemvec.store.bundle import read_manifest
from itemvec.util.errors import ItemvecError

# One valid, non-default value per option (typed as a config file holds it).
INGEST_VALUES: dict[str, Any] = {
    "ingest.context": "sid", "ingest.item": "iid", "ingest.time": "t", "ingest.event": "kind",
    "ingest.event_weights": "view=1,buy=3", "ingest.session_gap": "30m",
    "ingest.context_kind": "session",
    "ingest.order": "pos", "ingest.format": "table", "ingest.sep": "|", "ingest.header": False,
    "ingest.columns": "sid,iid,t,kind,pos", "ingest.encoding": "latin-1",
}
TRAIN_VALUES: dict[str, Any] = {
    **INGEST_VALUES,
    "side.items": "items.csv", "side.item_key": "iid2", "side.features": "category:cat",
    "side.relations": "relations.csv", "side.relation_weight": 0.7, "side.mode": "joint",
    "side.max_warm_drop": 0.01, "side.items_sep": ";", "side.items_columns": "iid2,category",
    "side.items_encoding": "cp1252",
    "cooccurrence.min_count": 2, "cooccurrence.window": 3, "cooccurrence.min_support": 2,
    "training.objective": "infonce", "training.dim": 8, "training.epochs": 2,
    "training.history_epochs": 0, "training.temperature": 0.3, "training.lr": 0.02,
    "training.seed": 7, "training.device": "cpu", "training.precision": "bf16",
    "training.accumulate": 2, "training.pairs_per_epoch": 1000,
    "training.checkpoint_every": "10m", "training.checkpoint_dir": "ck",
    "streaming.mode": "off", "streaming.memory_limit": "1G",
}
UPDATE_VALUES: dict[str, Any] = {
    **INGEST_VALUES, "side.items": "new_items.csv", "side.item_key": "iid2",
    "update.decay_half_life": "2d", "update.epochs": 5, "update.start": "stored",
    "update.anchors": "touched", "update.lr": 0.005, "update.batch_size": 64,
    "update.patience": 3, "update.eval_every": 2, "update.validation_fraction": 0.2,
    "update.init": "random",
}


def as_flags(values: dict[str, Any]) -> list[str]:
    """Option and value; a boolean field is its --no-... flag alone."""
    return [part for path, value in values.items()
            for part in ((flag_of(path),) if isinstance(value, bool) else (flag_of(path), str(value)))]


def as_file(values: dict[str, Any], path: Path) -> Path:
    """The values nested by section, as JSON or TOML by ``path``'s suffix."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    if path.suffix == ".toml":
        lines = []
        for section, fields in nested.items():
            lines.append(f"[{section}]")
            lines += [f"{name} = {json.dumps(value)}" for name, value in fields.items()]
        path.write_text("\n".join(lines) + "\n")
        assert tomllib.loads(path.read_text())
    else:
        path.write_text(json.dumps(nested))
    return path


@pytest.fixture
def recorded(monkeypatch) -> list[tuple]:
    """``pipeline.train`` and ``update.update`` replaced by recorders of what they were given."""
    calls: list[tuple] = []

    def fake_train(events, config, out=None, **options):
        calls.append(("train", config))
        stats = {"items": 1, "events": 1, "contexts": 1, "best_epoch": 1, "train_seconds": 0.0,
                 "seconds": {"train": 0.0}}
        return SimpleNamespace(stats=stats, embeddings=None, cooccurrence=None, item_counts=None,
                               training=SimpleNamespace(encoder=SimpleNamespace(
                                   state_dict=lambda: {})), files={})

    def fake_update(bundle, events, **options):
        calls.append(("update", options))
        return SimpleNamespace(lineage={"added": dict(events=1, contexts=1, new_items=0, pairs=0)},
                               embeddings=[], stats={"epochs_run": 0, "train_seconds": 0.0})

    monkeypatch.setattr(pipeline, "train", fake_train)
    monkeypatch.setattr(updating, "update", fake_update)
    return calls


def test_every_option_is_covered_with_a_non_default_value():
    assert set(TRAIN_VALUES) == set(TRAIN_OPTIONS)
    assert set(UPDATE_VALUES) == {*INGEST_OPTIONS, *READ_OPTIONS, "side.items", "side.item_key",
                                  *UPDATE_OPTIONS}
    configured = PipelineConfig().with_values({**TRAIN_VALUES, **UPDATE_VALUES})
    for path in {**TRAIN_VALUES, **UPDATE_VALUES}:
        section, name = path.split(".")
        assert getattr(getattr(configured, section), name) != field_info(path).default, path


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_train_from_file_equals_train_from_flags(recorded, cli, tmp_path, suffix):
    code, _, err = cli(["train", "log.csv", "--out", tmp_path / "a", *as_flags(TRAIN_VALUES)])
    assert code == 0, err
    config_file = as_file(TRAIN_VALUES, tmp_path / f"config{suffix}")
    code, _, err = cli(["train", "log.csv", "--out", tmp_path / "b", "--config", config_file])
    assert code == 0, err
    (_, from_flags), (_, from_file) = recorded
    assert from_file == from_flags
    assert from_file.training.dim == 8 and from_file.ingest.session_gap == 1800.0
    assert from_file.streaming.memory_limit == 1 << 30 and from_file.side.mode == "joint"


def test_a_flag_wins_over_the_file_and_the_file_over_defaults(recorded, cli, tmp_path):
    config_file = as_file({"training.dim": 8, "training.lr": 0.5, "cooccurrence.window": 2},
                          tmp_path / "config.toml")
    code, _, err = cli(["train", "log.csv", "--out", tmp_path / "m", "--config", config_file,
                        "--dim", "16"])
    assert code == 0, err
    config = recorded[0][1]
    assert (config.training.dim, config.training.lr, config.cooccurrence.window) == (16, 0.5, 2)
    assert config.training.epochs == 40  # neither: the default


def test_update_from_file_equals_update_from_flags(recorded, cli, tmp_path):
    args = ["update", "bundle", "new.csv", "--out", tmp_path / "v2"]
    code, _, err = cli([*args, *as_flags(UPDATE_VALUES)])
    assert code == 0, err
    code, _, err = cli([*args, "--config", as_file(UPDATE_VALUES, tmp_path / "u.toml")])
    assert code == 0, err
    (_, from_flags), (_, from_file) = recorded
    assert from_file["settings"] == from_flags["settings"]
    assert from_file["settings"].epochs == 5 and from_file["settings"].decay_half_life == 172800
    assert (from_file["items"], from_file["item_key"]) == ("new_items.csv", "iid2")
    flag_ingest = {k: v for k, v in from_flags["ingest"].items()}
    assert flag_ingest["session_gap"] == "30m" and from_file["ingest"]["session_gap"] == 1800.0
    assert set(from_file["ingest"]) == set(flag_ingest) == {
        p.split(".")[1] for p in (*INGEST_OPTIONS, *READ_OPTIONS)}


def test_update_file_without_ingest_keeps_the_bundles_columns(recorded, cli, tmp_path):
    config_file = as_file({"update.epochs": 1}, tmp_path / "u.json")
    code, _, err = cli(["update", "bundle", "new.csv", "--out", tmp_path / "v2", "--config",
                        config_file])
    assert code == 0, err
    assert recorded[0][1]["ingest"] == {} and recorded[0][1]["settings"].epochs == 1


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("bad.json", '{"training": {"history_epochs": 2.5}}',
     "training.history_epochs must be an integer >= 0, got 2.5; use 0 to turn history"),
    ("bad.toml", '[training]\npairs_per_epoch = "3"\n',
     "training.pairs_per_epoch must be an integer >= 1, got '3'"),
    ("typo.json", '{"trainig": {"dim": 8}}',
     "config: unknown key 'trainig'; known: cooccurrence, ingest, query, serve, side, "
     "streaming, training, update"),
    ("side.toml", '[side]\nmode = "eges"\n', "side.mode must be one of behaviour-first, joint"),
])
def test_bad_config_file_is_one_line_before_any_training(cli, shop_files, tmp_path, name,
                                                         content, expected):
    config_file = tmp_path / name
    config_file.write_text(content)
    out = tmp_path / "model"
    code, _, err = cli(["train", shop_files[0], "--out", out, "--config", config_file, "-q"])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not out.exists()  # nothing trained, nothing written


def test_bad_toml_names_the_file(cli, tmp_path):
    config_file = tmp_path / "c.toml"
    config_file.write_text("[training\ndim = 8\n")
    code, _, err = cli(["train", "log.csv", "--out", tmp_path / "m", "--config", config_file])
    assert code == 2 and "c.toml: not valid TOML" in err and len(err.strip().splitlines()) == 1


def test_bad_update_and_serve_options_fail_in_one_line(cli, tmp_path):
    code, _, err = cli(["update", "bundle", "new.csv", "--out", tmp_path / "v2", "--start",
                        "scratch"])
    assert code == 2 and "update.start must be one of stored, refresh, got 'scratch'" in err
    code, _, err = cli(["serve", tmp_path, "--port", "70000"])
    assert code == 2 and "serve.port must be in [1, 65535], got 70000" in err


def test_help_and_defaults_come_from_the_fields(cli):
    code, out, _ = cli(["train", "--help"])
    assert code == 0
    for path in ("training.dim", "training.history_epochs", "cooccurrence.window"):
        description = field_info(path).description
        assert description.split()[0] in out and flag_of(path) in out
    assert help_of("training.dim").endswith("[default: 64]")
    assert help_of("training.history_epochs").endswith(
        "[default: auto: 10 up to 2M training events, off above]")
    assert flag_of("side.mode") == "--side-mode" and flag_of("update.epochs") == "--epochs"


def test_a_run_from_a_toml_file_stores_the_config_of_the_same_run_from_flags(cli, tmp_path):
    shop = generate(3000, 60, n_categories=4, seed=1)
    events, items = write(shop, tmp_path / "events.csv")
    values = {"ingest.time": "ts", "side.items": str(items), "side.features": "category:cat",
              "cooccurrence.window": 3, "training.dim": 8, "training.epochs": 1,
              "training.history_epochs": 0, "training.device": "cpu", "training.seed": 3}
    code, _, err = cli(["train", events, "--out", tmp_path / "flags", "-q", *as_flags(values)])
    assert code == 0, err
    config_file = as_file(values, tmp_path / "config.toml")
    code, _, err = cli(["train", events, "--out", tmp_path / "file", "-q", "--config",
                        config_file])
    assert code == 0, err
    from_flags = read_manifest(tmp_path / "flags")["config"]
    from_file = read_manifest(tmp_path / "file")["config"]
    assert from_file == from_flags
    assert from_file["training"]["dim"] == 8 and from_file["side"]["features"] == "category:cat"
    assert PipelineConfig.from_dict(from_file).cooccurrence.window == 3  # manifests load back


def test_serve_from_file_equals_serve_from_flags(monkeypatch, cli, tmp_path):
    """The serve settings as resolved, stopped before a bundle is loaded or a port opened."""
    seen: list[PipelineConfig] = []

    def resolve_then_stop(config_file, settings):
        seen.append(options.build_config(config_file, settings))
        raise ItemvecError("stopped before serving")

    monkeypatch.setattr(serving, "build_config", resolve_then_stop)
    values = {"serve.host": "0.0.0.0", "serve.port": 9001, "serve.watch_interval": 0.5,
              "serve.max_body": 4096, "serve.threads": 2, "serve.workers": 2,
              "serve.reload_interval": 5.0}
    assert cli(["serve", tmp_path, *as_flags(values)])[0] == 2
    assert cli(["serve", tmp_path, "--config", as_file(values, tmp_path / "s.toml")])[0] == 2
    assert seen[0] == seen[1] and seen[0].serve.port == 9001 and seen[0].serve.threads == 2
    assert seen[0].serve.workers == "2"
