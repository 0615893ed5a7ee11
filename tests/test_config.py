"""Config validation: unknown keys and bad values fail naming the field, the value and the fix."""

from __future__ import annotations

import json

import pytest

from itemvec.config import (
    CooccurrenceConfig,
    IngestConfig,
    PipelineConfig,
    QueryConfig,
    TrainingConfig,
    load_config,
    parse_duration,
    parse_event_weights,
)
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
