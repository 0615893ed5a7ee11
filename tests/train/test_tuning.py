"""The hyper-parameter search: a planted setting is found, a study resumes, the space validates."""

from __future__ import annotations

import json

import pytest

from itemvec.config import PipelineConfig
from itemvec.data.frames import events_from_frame
from itemvec.data.synth import generate
from itemvec.train.tuning import (
    SPACE,
    Dimension,
    TuneSettings,
    apply_space,
    choose_best,
    load_space,
    open_study,
    trial_config,
    trials_to_within,
    tune_log,
    without_fixed,
)
from itemvec.util.errors import ConfigError

optuna = pytest.importorskip("optuna")

BASE = PipelineConfig.from_flat(context="session_id", item="item_id", time="ts", epochs=6,
                                device="cpu", history_epochs=0)
DIM_ONLY = {"dim": Dimension("categorical", choices=(2, 24))}


@pytest.fixture(scope="module")
def log():
    """30 hidden categories: two dimensions cannot hold them apart, 24 can."""
    shop = generate(8000, 300, n_categories=30, seed=0)
    return events_from_frame(shop.events, BASE.ingest)


def states(storage: str, name: str = "itemvec") -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]


def test_the_search_finds_the_planted_dimension(log):
    result = tune_log(log, BASE, DIM_ONLY, TuneSettings(trials=4), progress=False)
    assert result.best_params == {"dim": 24}
    scores = {dim: [t["value"] for t in result.trials if t["params"]["dim"] == dim
                    and t["state"] == "COMPLETE"] for dim in (2, 24)}
    assert scores[2] and scores[24]  # both were tried
    assert min(scores[24]) > max(scores[2]) + 0.2  # and the planted one wins clearly
    assert result.config.training.dim == 24
    assert result.config.training.validation_task == "s2i"  # the mean stops early on s2i
    assert result.best_value == pytest.approx((result.trials[result.best_trial]["i2i"]
                                               + result.trials[result.best_trial]["s2i"]) / 2)


def test_a_study_resumes_and_a_killed_trial_is_run_again(log, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    space = {"temperature": Dimension("float", 0.1, 0.4)}
    first = tune_log(log, BASE, space, TuneSettings(trials=2, storage=storage), progress=False)
    assert first.finished == 2 and first.ran == 2
    study = optuna.load_study(study_name="itemvec", storage=storage)
    killed = study.ask({"temperature": optuna.distributions.FloatDistribution(0.1, 0.4)})
    assert states(storage)[-1] == "RUNNING"  # what a killed run leaves behind
    again = tune_log(log, BASE, space, TuneSettings(trials=2, storage=storage, n_jobs=2),
                     progress=False)  # two threads: the enqueued trial must run once only
    assert states(storage) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert again.finished == 4 and again.ran == 2
    assert again.trials[3]["params"] == killed.params  # the killed trial's settings first
    tried = [t["params"]["temperature"] for t in again.trials if t["state"] == "COMPLETE"]
    assert len(set(tried)) == 4  # the resumed run drew new settings, not the first run's again


def test_a_new_study_starts_at_the_given_configuration(log):
    result = tune_log(log, BASE, {"dim": Dimension("categorical", choices=(16, 64))},
                      TuneSettings(trials=1), progress=False)
    assert result.trials[0]["params"] == {"dim": 64}  # BASE's dim (the default)


def test_a_resumed_study_must_search_the_same_space(log, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    tune_log(log, BASE, DIM_ONLY, TuneSettings(trials=1, storage=storage), progress=False)
    with pytest.raises(ConfigError, match="searched another space"):
        tune_log(log, BASE, {"dim": Dimension("categorical", choices=(2, 8))},
                 TuneSettings(trials=1, storage=storage), progress=False)


def test_space_files_override_add_and_remove(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"dim": {"low": 8, "high": 64}, "window": None,
                                "hidden": {"choices": [0, 32]},
                                "popularity_weight": {"low": 0.5, "high": 1.5}}))
    space = load_space(path)
    assert space["dim"] == Dimension("int", 8, 64, log=True)  # log kept from the default
    assert "window" not in space
    assert space["hidden"] == Dimension("categorical", choices=(0, 32))
    assert space["popularity_weight"] == Dimension("float", 0.5, 1.5)
    toml = tmp_path / "space.toml"
    toml.write_text("[lr]\nlow = 0.001\nhigh = 0.1\n")
    assert load_space(toml)["lr"] == Dimension("float", 0.001, 0.1, log=True)


@pytest.mark.parametrize(("entries", "message"), [
    ({"dimm": {"low": 2, "high": 8}}, "space: unknown parameter 'dimm'; known: "),
    ({"context": {"choices": ["a"]}}, "space: unknown parameter 'context'"),
    ({"dim": {"low": 1, "high": 8}}, "space.dim: training.dim must be >= 2, got 1"),
    ({"dim": {"low": 64, "high": 8}}, "space.dim: low must be below high, got 64 and 8"),
    ({"dim": {"low": 2.5, "high": 8}}, "space.dim.low must be an integer, got 2.5"),
    ({"dim": {"lo": 2}}, "space.dim: unknown key 'lo'"),
    ({"dim": 32}, "space.dim must be a mapping"),
    ({"distance_weighting": {"choices": ["cubic"]}}, "space.distance_weighting: "),
    ({"row_weight_power": {"low": 0.0, "high": 1.0, "log": True}}, "true needs low > 0"),
])
def test_space_errors_are_one_line_naming_the_parameter(entries, message):
    with pytest.raises(ConfigError) as error:
        apply_space(SPACE, entries)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_fixed_settings_leave_the_space_and_query_settings_turn_the_tuner_off():
    assert set(without_fixed(SPACE, {"dim", "lr"})) == set(SPACE) - {"dim", "lr"}
    with pytest.raises(ConfigError, match="nothing to search"):
        without_fixed(DIM_ONLY, {"dim"})
    config = trial_config(BASE, {"recency_half_life": 0.0, "window": 3})
    assert (config.query.recency_half_life, config.cooccurrence.window) == (0.0, 3)
    assert config.training.tune_query is False
    assert trial_config(BASE, {"window": 3}).training.tune_query is True


def test_trials_to_within_counts_trials_in_order():
    trials = [{"state": "COMPLETE", "value": 0.50}, {"state": "PRUNED", "value": None},
              {"state": "COMPLETE", "value": 0.596}, {"state": "COMPLETE", "value": 0.60}]
    assert trials_to_within(trials, 0.01) == 3  # 0.596 >= 0.99 * 0.60
    assert trials_to_within(trials, 0.0) == 4
    assert trials_to_within([{"state": "PRUNED", "value": None}], 0.01) is None


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="--trials must be >= 0"):
        TuneSettings(trials=-1)
    with pytest.raises(ConfigError, match="--metric must be one of mean, i2i, s2i"):
        TuneSettings(metric="ndcg")


def test_the_given_configuration_stays_unless_beaten_by_a_standard_error():
    start = {"dim": 64}
    trials = [{"number": 0, "state": "COMPLETE", "value": 0.50, "i2i": 0.4, "s2i": 0.6,
               "params": {"dim": 64}},
              {"number": 1, "state": "COMPLETE", "value": 0.51, "i2i": 0.42, "s2i": 0.6,
               "params": {"dim": 32}}]
    counts = {"i2i": 1000, "s2i": 1000}  # se = sqrt(.4*.6/1000 + .6*.4/1000) / 2 = 0.01095
    best, margin = choose_best(trials, start, counts, "mean")
    assert margin == pytest.approx(0.010954, abs=1e-6) and best["number"] == 0
    best, _ = choose_best(trials, start, {"i2i": 4000, "s2i": 4000}, "mean")  # se 0.0055
    assert best["number"] == 1
    best, margin = choose_best(trials, {"dim": 128}, counts, "mean")  # start not among them
    assert (best["number"], margin) == (1, 0.0)


def test_trials_stop_early_on_the_metric(log):
    """``--metric i2i``: every trial's early stopping (and so its pruning reports) follows i2i."""
    result = tune_log(log, BASE, {"temperature": Dimension("float", 0.1, 0.4)},
                      TuneSettings(trials=1, metric="i2i"), progress=False)
    assert result.config.training.validation_task == "i2i"
    trial = result.trials[0]
    assert trial["value"] == pytest.approx(trial["i2i"]) and trial["intermediate"]


def test_a_resumed_study_must_maximise_the_same_metric(log, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    tune_log(log, BASE, DIM_ONLY, TuneSettings(trials=1, storage=storage, metric="i2i"),
             progress=False)
    with pytest.raises(ConfigError, match="maximised --metric i2i, not mean"):
        tune_log(log, BASE, DIM_ONLY, TuneSettings(trials=1, storage=storage), progress=False)


def test_the_pruner_stops_the_bottom_quarter_and_keeps_the_rest():
    """Four finished trials scored 0.30..0.33 at epoch 10: a trial at 0.315 is in the top three
    quarters and goes on; one at 0.301 is in the bottom quarter and stops. (Optuna's
    ``PercentilePruner(25)`` would keep only the top quarter and stop the 0.315 one too.)"""
    study = open_study(TuneSettings(trials=1), PipelineConfig(), {"dim": SPACE["dim"]})
    for k, value in enumerate((0.30, 0.31, 0.32, 0.33)):
        study.add_trial(optuna.trial.create_trial(
            params={"dim": 16 + k}, distributions={"dim": optuna.distributions.IntDistribution(
                16, 256, log=True)}, value=value,
            intermediate_values={epoch: value for epoch in range(0, 12, 2)}))
    for value, pruned in ((0.315, False), (0.301, True)):
        trial = study.ask()
        trial.report(value, 10)
        assert bool(trial.should_prune()) is pruned
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
