"""``ItemVec``: the estimator conventions, every input kind, the CLI equivalence, and the refit
that puts items seen only in the newest contexts into the model."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from conftest import run_cli
from safetensors.numpy import load_file

from itemvec import ItemVec, NotFittedError
from itemvec.data.synth import generate, write
from itemvec.util.errors import ConfigError, DataError

FAST = dict(dim=16, epochs=6, history_epochs=0, device="cpu")


@pytest.fixture(scope="module")
def small_shop():
    return generate(8_000, 120, n_categories=6, seed=3)


@pytest.fixture(scope="module")
def fitted(small_shop) -> ItemVec:
    return ItemVec(**FAST).fit(small_shop.events, context="session_id", item="item_id", time="ts")


def test_parameters_follow_scikit_learn_conventions():
    model = ItemVec(dim=8, lr=0.02)
    params = model.get_params()
    assert params["dim"] == 8 and params["lr"] == 0.02 and params["window"] == 5
    assert model.set_params(window=3) is model and model.get_params()["window"] == 3
    sklearn_base = pytest.importorskip("sklearn.base")
    clone = sklearn_base.clone(model)
    assert clone is not model and clone.get_params() == model.get_params()


def test_bad_parameters_fail_at_construction_naming_the_field():
    with pytest.raises(ConfigError, match="unknown parameter 'dimension'.*known: .*dim"):
        ItemVec(dimension=8)
    with pytest.raises(ConfigError, match=r"training.lr must be > 0, got -1"):
        ItemVec(lr=-1)
    with pytest.raises(ConfigError, match="training.lr"):
        ItemVec().set_params(lr=0)


def test_unfitted_model_says_so():
    model = ItemVec()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.embeddings  # noqa: B018
    assert not hasattr(model, "embeddings_")  # learned state only after fit
    with pytest.raises(NotFittedError):
        model.save("never-written")


def test_fit_returns_self_and_learns_planted_groups(fitted, small_shop):
    categories = dict(zip(small_shop.items["item_id"], small_shop.items["category"], strict=True))
    emb = fitted.embeddings
    assert fitted.item_ids_.shape[0] == fitted.vectors_.shape[0] == len(emb)
    counts = small_shop.events["item_id"].value_counts().sort("count", descending=True)
    same = []
    for item in counts["item_id"].head(30):
        ids, _ = emb.similar_items(item, n=5)
        same += [categories[i] == categories[item] for i in ids]
    assert np.mean(same) > 0.6  # chance is 1/6


def test_every_input_kind_gives_the_same_vocabulary(fitted, small_shop):
    events = small_shop.events
    expected = set(fitted.item_ids_)
    for data in (events.to_pandas(), events.to_arrow()):
        model = ItemVec(**FAST).fit(data, context="session_id", item="item_id", time="ts")
        assert set(model.item_ids_) == expected
        np.testing.assert_allclose(model.vectors_, fitted.vectors_, atol=1e-5)
    sequences = (events.sort("ts").group_by("session_id", maintain_order=True)
                 .agg("item_id")["item_id"].to_list())
    model = ItemVec(**FAST).fit(sequences)
    assert set(model.item_ids_) == expected


def test_several_headerless_files_as_a_list_of_paths(fitted, small_shop, tmp_path):
    """Layout settings are parameters (``sep``, ``header``, ``columns``) and a list of ``Path``
    objects is one log; the vectors equal the single-table fit's."""
    events = small_shop.events.select("session_id", "item_id", "ts")
    sessions = events["session_id"].unique().sort()
    paths = []
    for k, part in enumerate((sessions[: len(sessions) // 2], sessions[len(sessions) // 2:])):
        paths.append(tmp_path / f"part{k}.data")
        events.filter(pl.col("session_id").is_in(part.implode())).write_csv(
            paths[-1], separator="\t", include_header=False)
    model = ItemVec(**FAST, sep="\\t", header=False, columns="s,i,t").fit(
        paths, context="s", item="i", time="t")
    assert set(model.item_ids_) == set(fitted.item_ids_)
    np.testing.assert_allclose(model.vectors_, fitted.vectors_, atol=1e-5)


def test_bad_in_memory_input_names_the_problem():
    frame = pl.DataFrame({"s": ["a", "a", "b"], "i": ["x", None, "y"]})
    with pytest.raises(DataError, match="column 'item_id'.*not found.*columns present: s, i"):
        ItemVec(**FAST).fit(frame, context="s")
    with pytest.raises(DataError, match="row 1.*'i'"):
        ItemVec(**FAST).fit(frame, context="s", item="i")
    with pytest.raises(DataError, match="context 0 is str"):
        ItemVec(**FAST).fit(["abc", "def"])


def test_items_seen_only_in_the_newest_contexts_are_in_the_model(small_shop):
    """The held-out newest slice chooses the schedule; the final model is refit on it too."""
    events = small_shop.events
    newest = events["ts"].max()
    late = pl.DataFrame({"session_id": [f"late{i}" for i in range(6) for _ in range(3)],
                         "item_id": ["brand-new-a", "brand-new-b", "i1"] * 6,
                         "ts": [newest + 10.0 * i for i in range(18)]})
    data = pl.concat([events.select("session_id", "item_id", "ts"), late])
    model = ItemVec(**{**FAST, "epochs": 40}).fit(data, context="session_id", item="item_id",
                                                  time="ts")
    assert "brand-new-a" in model.embeddings and "brand-new-b" in model.embeddings
    ids, _ = model.embeddings.similar_items("brand-new-a", n=3)
    assert "brand-new-b" in ids  # learnt from the newest sessions, not just present
    refit = model.stats_["refit"]
    assert refit["schedule"]["epochs"] == model.stats_["best_epoch"]
    assert model.stats_["contexts"] > refit["selection_contexts"]
    without = ItemVec(**FAST, refit=False).fit(data, context="session_id", item="item_id",
                                               time="ts")
    assert "brand-new-a" not in without.embeddings


def test_stage_timings_add_up(fitted):
    seconds = fitted.stats_["seconds"]
    assert {"count", "train", "refit"} <= set(seconds)
    assert fitted.stats_["train_seconds"] == pytest.approx(sum(seconds.values()), abs=0.01)


def test_cli_and_fit_write_identical_bundles(small_shop, tmp_path):
    events, _ = write(small_shop, tmp_path / "events.csv")
    args = ["--dim", "16", "--epochs", "6", "--history-epochs", "0", "--device", "cpu"]
    code, out, err = run_cli(["train", events, "--context", "session_id", "--item", "item_id",
                              "--time", "ts", "--out", tmp_path / "cli", "--quiet", *args])
    assert code == 0, err
    assert all(f"{stage} " in out for stage in ("read", "count", "train", "refit"))
    ItemVec(**FAST).fit(events, context="session_id", item="item_id", time="ts").save(
        tmp_path / "lib")
    cli = json.loads((tmp_path / "cli" / "manifest.json").read_text())
    lib = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert cli["config"] == lib["config"]
    for name in cli["files"]:  # every array and table byte for byte (the manifest holds times)
        assert cli["files"][name] == lib["files"][name], name
    a = load_file(str(tmp_path / "cli" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "lib" / "encoder.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def shuffled_baskets(n: int, seed: int) -> pl.DataFrame:
    """Baskets of one hidden group each, in random order, with the position as a clock."""
    rng = np.random.default_rng(seed)
    rows = [(f"b{seed}-{b}", f"i{group * 8 + item}", position)
            for b in range(n) for group in [int(rng.integers(6))]
            for position, item in enumerate(rng.choice(8, size=5, replace=False))]
    return pl.DataFrame(rows, schema=["basket", "item", "position"], orient="row")


def test_fit_decides_baskets_from_the_data_and_update_keeps_the_kind(tmp_path):
    events = shuffled_baskets(1500, seed=0)
    model = ItemVec(**FAST).fit(events, context="basket", item="item", time="position")
    decision = model.stats_["context_kind_decision"]
    assert model.stats_["context_kind"] == "basket" == decision["kind"]
    assert decision["chosen_by"] == "data" and "no measurable signal" in decision["reason"]
    assert model.config_.ingest.context_kind == "auto"  # the config says what was asked
    walks = pl.DataFrame({"basket": ["w"] * 40, "item": [f"i{k % 48}" for k in range(40)],
                          "position": list(range(40))})
    model.update(walks, epochs=1)  # a batch on its own could read as a session
    assert model.stats_["context_kind"] == "basket"
    events.write_csv(tmp_path / "baskets.csv")
    code, out, err = run_cli(["train", tmp_path / "baskets.csv", "--context", "basket", "--item",
                              "item", "--time", "position", "--out", tmp_path / "m", "-q",
                              "--dim", "16", "--epochs", "2", "--history-epochs", "0"])
    assert code == 0, err
    assert "contexts read as baskets (--context-kind auto): the order carries no" in out


def test_save_load_update_round_trip(fitted, small_shop, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = ItemVec.load(tmp_path / "m")
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.vectors_, fitted.vectors_)
    new = pl.DataFrame({"session_id": ["n1"] * 3 + ["n2"] * 3,
                        "item_id": ["fresh", "i2", "i3", "fresh", "i2", "i4"],
                        "ts": [2e9 + k for k in range(6)]})
    assert loaded.update(new, epochs=2) is loaded
    assert "fresh" in loaded.embeddings and loaded.lineage_ is not None
    loaded.save(tmp_path / "m2")
    assert "fresh" in ItemVec.load(tmp_path / "m2").embeddings


def test_tune_searches_fixes_the_given_parameters_and_fits_the_winner(small_shop, tmp_path):
    pytest.importorskip("optuna")
    space = {name: None for name in ("temperature", "lr", "window", "distance_weighting",
                                     "target_power", "row_weight_power", "history_epochs")}
    model = ItemVec(epochs=3, history_epochs=0, device="cpu", window=3).tune(
        small_shop.events, "session_id", "item_id", "ts", trials=2,
        space={**space, "dim": {"choices": [8, 16]}, "window": {"low": 1, "high": 9}},
        out=tmp_path / "tuned")
    summary = model.tuning_
    assert [t["params"].keys() for t in summary["trials"]] == [{"dim"}, {"dim"}]  # window fixed
    assert model.get_params()["dim"] == summary["best_params"]["dim"] == model.embeddings.dim
    assert model.get_params()["window"] == 3
    saved = json.loads((tmp_path / "tuned" / "best_config.json").read_text())
    assert saved["training"]["dim"] == model.embeddings.dim
    assert ItemVec.load(tmp_path / "tuned").embeddings.dim == model.embeddings.dim
