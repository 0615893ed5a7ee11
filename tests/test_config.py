"""Config validation: unknown keys and bad values fail naming the field, the value and the fix."""

from __future__ import annotations

import json
import typing

import pytest

from itemvec.config import (
    FLAT_NAMES,
    CooccurrenceConfig,
    FeatureConfig,
    IngestConfig,
    Objective,
    PipelineConfig,
    QueryConfig,
    TrainingConfig,
    UpdateConfig,
    field_info,
    load_config,
    parse_duration,
    parse_event_weights,
)
from itemvec.model.objectives import objectives
from itemvec.util.errors import ConfigError, ItemvecError


def test_unknown_top_level_key_names_it_and_the_known_keys():
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict({"trainig": {}})
    message = str(info.value)
    assert "'trainig'" in message
    for known in ("cooccurrence", "ingest", "query", "training"):
        assert known in message


def test_unknown_nested_key_names_the_section_path():
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict({"training": {"learning_rate": 0.1}})
    message = str(info.value)
    assert "config.training" in message and "'learning_rate'" in message
    assert "lr" in message and "epochs" in message


@pytest.mark.parametrize(("section", "field", "value", "expected"), [
    (TrainingConfig, "lr", -1, "training.lr must be > 0, got -1"),
    (TrainingConfig, "dim", 1, "training.dim must be >= 2, got 1"),
    (TrainingConfig, "temperature", 0, "training.temperature must be > 0, got 0"),
    (TrainingConfig, "epochs", 0, "training.epochs must be >= 1, got 0"),
    (TrainingConfig, "validation_fraction", 0.7, "training.validation_fraction"),
    (TrainingConfig, "init", "zeros", "training.init must be one of svd, random, got 'zeros'"),
    (TrainingConfig, "device", "tpu", "training.device"),
    (CooccurrenceConfig, "window", 0, "cooccurrence.window must be >= 1, got 0"),
    (CooccurrenceConfig, "basket_max_size", 1, "cooccurrence.basket_max_size must be >= 2"),
    (CooccurrenceConfig, "distance_weighting", "linear", "'linear'"),
    (CooccurrenceConfig, "min_count", 0, "cooccurrence.min_count must be >= 1, got 0"),
    (QueryConfig, "recency_half_life", -2, "query.recency_half_life must be >= 0, got -2"),
    (IngestConfig, "context_kind", "user", "ingest.context_kind must be one of auto, session, "
                                           "basket, got 'user'"),
])
def test_bad_value_names_field_and_value(section, field, value, expected):
    with pytest.raises(ConfigError) as info:
        section(**{field: value})
    assert expected in str(info.value)


def test_config_errors_are_user_errors_with_exit_code_2():
    with pytest.raises(ItemvecError) as info:
        TrainingConfig(lr=0)
    assert info.value.exit_code == 2


def test_durations_parse_to_seconds():
    assert parse_duration("30m") == 1800.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("7d") == 7 * 86400.0
    assert parse_duration("90") == 90.0
    assert parse_duration(45) == 45.0
    with pytest.raises(ConfigError, match="ingest.session_gap.*'soon'"):
        parse_duration("soon", "ingest.session_gap")


def test_session_gap_needs_time_and_is_parsed():
    assert IngestConfig(time="ts", session_gap="30m").session_gap == 1800.0
    with pytest.raises(ConfigError, match="--time"):
        IngestConfig(session_gap="30m")
    with pytest.raises(ConfigError, match="session_gap must be > 0"):
        IngestConfig(time="ts", session_gap=0)


def test_event_weights_parse_and_validate():
    assert parse_event_weights("view=1, cart=3,purchase=5") == {
        "view": 1.0, "cart": 3.0, "purchase": 5.0}
    with pytest.raises(ConfigError, match=r"event_weights\[cart\] must be a number, got 'x'"):
        parse_event_weights("view=1,cart=x")
    with pytest.raises(ConfigError, match="must be >= 0"):
        parse_event_weights("view=-1")
    with pytest.raises(ConfigError, match="view=1,cart=3"):
        parse_event_weights("view")
    with pytest.raises(ConfigError, match="needs ingest.event"):
        IngestConfig(event_weights="view=1")


def test_round_trip_through_dict_and_file(tmp_path):
    config = PipelineConfig(training=TrainingConfig(lr=0.05, dim=16),
                            cooccurrence=CooccurrenceConfig(window=3))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    loaded = load_config(path)
    assert loaded == config
    assert loaded.training.lr == 0.05 and loaded.cooccurrence.window == 3


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": {"lr": 0.1,}}')
    with pytest.raises(ConfigError, match=r"bad\.json:1: not valid JSON"):
        load_config(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"training": {"lr": -1}}')
    with pytest.raises(ConfigError, match="training.lr must be > 0, got -1"):
        load_config(wrong)
    section = tmp_path / "section.json"
    section.write_text('{"training": 3}')
    with pytest.raises(ConfigError, match="config.training must be a mapping"):
        load_config(section)


@pytest.mark.parametrize(("data", "expected"), [
    ({"training": {"lr": "fast"}}, "training.lr must be a number > 0, got 'fast'; try 0.01"),
    ({"training": {"epochs": 2.5}}, "training.epochs must be an integer >= 1, got 2.5"),
    ({"cooccurrence": {"window": "3"}}, "cooccurrence.window must be an integer >= 1, got '3'"),
    ({"training": {"dim": True}}, "training.dim must be an integer >= 2, got True"),
    ({"ingest": {"context": 5}}, "ingest.context must be a string, got 5"),
])
def test_wrong_json_types_name_field_and_value(data, expected):
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict(data)
    assert expected in str(info.value)


def test_ints_are_fine_for_float_fields_and_durations_may_be_text():
    config = PipelineConfig.from_dict({"training": {"lr": 1},
                                       "ingest": {"time": "ts", "session_gap": "30m"}})
    assert config.training.lr == 1 and config.ingest.session_gap == 1800.0


def test_objective_choices_are_the_registered_objectives():
    assert set(typing.get_args(Objective)) == {"auto", *objectives.names()}


def test_optional_fields_are_type_checked_with_the_fix():
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict({"training": {"history_epochs": 2.5}})
    assert str(info.value) == ("training.history_epochs must be an integer >= 0, got 2.5; use 0 "
                               "to turn history fine-tuning off, or leave it unset for auto")
    with pytest.raises(ConfigError, match=r"training.pairs_per_epoch must be an integer >= 1, "
                                          r"got '3'"):
        PipelineConfig.from_dict({"training": {"pairs_per_epoch": "3"}})
    with pytest.raises(ConfigError, match=r"side.features must be a string or a mapping, got 3"):
        PipelineConfig.from_dict({"side": {"features": 3}})
    with pytest.raises(ConfigError, match="streaming.memory_limit must be a size like 4G"):
        PipelineConfig.from_dict({"streaming": {"memory_limit": "lots"}})


def test_every_problem_is_one_line():
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_dict({"training": {"dim": 1, "lr": -1, "init": "zeros"},
                                  "update": {"epochs": -1}, "serve": {"port": 0}})
    assert str(info.value).splitlines() == [
        "training.dim must be >= 2, got 1",
        "training.lr must be > 0, got -1; try 0.01",
        "training.init must be one of svd, random, got 'zeros'",
        "update.epochs must be >= 0, got -1",
        "serve.port must be in [1, 65535], got 0",
    ]


def test_toml_config_is_read_like_json(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[training]\ndim = 16\nlr = 0.05\n\n[side]\nmode = "joint"\n'
                    '[streaming]\nmemory_limit = "2G"\n')
    config = load_config(path)
    assert (config.training.dim, config.training.lr, config.side.mode) == (16, 0.05, "joint")
    assert config.streaming.memory_limit == 2 << 30
    path.write_text("[training]\nlr = -1\n")
    with pytest.raises(ConfigError, match="training.lr must be > 0, got -1"):
        load_config(path)


def test_flat_names_route_to_their_sections_and_back():
    config = PipelineConfig.from_flat(dim=32, window=3, side_mode="joint", streaming="on",
                                      update_epochs=1, port=9000, time="ts", session_gap="1h")
    assert (config.training.dim, config.cooccurrence.window, config.side.mode) == (32, 3, "joint")
    assert (config.streaming.mode, config.update.epochs, config.serve.port) == ("on", 1, 9000)
    assert config.ingest.session_gap == 3600.0
    flat = config.flat()
    assert flat["dim"] == 32 and flat["update_epochs"] == 1 and len(flat) == len(FLAT_NAMES)
    assert PipelineConfig.from_flat(**flat) == config
    with pytest.raises(ConfigError, match="unknown parameter 'dimension'; known: .*dim"):
        PipelineConfig.from_flat(dimension=32)
    with pytest.raises(ConfigError, match="training.dim must be >= 2, got 1"):
        PipelineConfig.from_flat(dim=1)


def test_every_field_has_a_description():
    for flat, (section, name) in FLAT_NAMES.items():
        assert field_info(f"{section}.{name}").description, flat


def test_replace_validates_and_leaves_the_original():
    training = TrainingConfig(dim=16)
    assert training.replace(dim=32).dim == 32 and training.dim == 16
    with pytest.raises(ConfigError, match="training.dim must be >= 2, got 1"):
        training.replace(dim=1)
    with pytest.raises(ConfigError, match="needs --time"):
        PipelineConfig().with_values({"ingest.session_gap": "30m"})


# What ``to_dict`` wrote before the side/streaming/update/serve sections: old bundles' manifests.
MANIFEST_BEFORE_PYDANTIC = {
    "ingest": {"context": "session_id", "item": "item_id", "time": "ts", "event": "event",
               "event_weights": {"view": 1.0, "purchase": 5.0}, "session_gap": 1800.0,
               "context_kind": "auto", "dedupe_consecutive": True},
    "cooccurrence": {"window": 5, "basket_max_size": 50, "distance_weighting": "harmonic",
                     "min_count": 1, "time_decay_half_life": None, "min_support": 1},
    "training": {"objective": "auto", "dim": 64, "epochs": 40, "batch_size": 512, "lr": 0.01,
                 "temperature": 0.2, "weight_decay": 0.0, "target_power": 1.0,
                 "row_weight_power": 0.5, "pairs_per_epoch": None, "negatives": 5,
                 "negative_power": 0.75, "init": "svd", "hidden": 0, "tune_query": True,
                 "history_epochs": None, "history_lr": 0.002, "validation_fraction": 0.1,
                 "patience": 2, "patience_batches": 120, "eval_every": 2, "seed": 0,
                 "device": "cpu", "threads": None, "precision": "fp32", "accumulate": 1,
                 "sparse_updates": "auto", "checkpoint_every": 600.0, "checkpoint_dir": None},
    "query": {"recency_half_life": 3.0, "popularity_weight": 1.25, "evidence_power": 0.25},
}


def test_manifests_written_before_load_and_round_trip():
    config = PipelineConfig.from_dict(MANIFEST_BEFORE_PYDANTIC)
    assert config.ingest.session_gap == 1800.0 and config.query.popularity_weight == 1.25
    assert config.side == FeatureConfig() and config.update == UpdateConfig()
    stored = json.loads(json.dumps(config.to_dict()))
    # fields newer than that manifest take their defaults
    added = {"training": {"refit": True, "validation_task": "s2i"},
             "ingest": {"order": None, "format": "auto", "sep": None, "header": True,
                        "columns": None, "encoding": None},
             "query": {"cold_similarity_offset": None}}
    expected = {k: {**v, **added.get(k, {})} for k, v in MANIFEST_BEFORE_PYDANTIC.items()}
    assert {k: stored[k] for k in MANIFEST_BEFORE_PYDANTIC} == expected
    assert PipelineConfig.from_dict(stored) == config


def test_serve_workers_is_a_count_or_auto():
    from itemvec.config import ServeConfig

    assert ServeConfig().workers == "1"
    assert ServeConfig(workers=2).workers == "2" and ServeConfig(workers="auto").workers == "auto"
    for bad in (0, "0", "many", 2.5, True):
        with pytest.raises(ConfigError, match="serve.workers must be a number of processes"):
            ServeConfig(workers=bad)
