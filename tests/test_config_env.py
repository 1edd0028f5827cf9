"""``${NAME}`` in pipeline string values comes from the environment (secrets out of the file)."""

from pathlib import Path

import pytest
import tomli_w

from consumer.config import expand_env, load
from consumer.errors import ConfigError

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"


def _pipeline(tmp_path: Path, kafka_config: dict[str, object]) -> Path:
    doc = {
        "kafka": {"bootstrap_servers": "${BROKERS}", "topics": ["ad-events"], "group_id": "g", "config": kafka_config},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": "1m"},
        "aggregate": {"metrics": {"events": "count"}},
        "sink": {"type": "sqlite", "path": "out.db", "table": "stats"},
    }
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def test_load_substitutes_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERS", "b-1.example:9096,b-2.example:9096")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "fleet")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "p@ss${word}")
    path = _pipeline(
        tmp_path,
        {
            "security.protocol": "SASL_SSL",
            "sasl.username": "${KAFKA_SASL_USERNAME}",
            "sasl.password": "${KAFKA_SASL_PASSWORD}",
            "client.id": "fleet-${KAFKA_SASL_USERNAME}-$${HOSTNAME}",
            "session.timeout.ms": 10000,
        },
    )
    p = load(path)
    assert p.kafka.bootstrap_servers == "b-1.example:9096,b-2.example:9096"
    assert p.kafka.config["sasl.username"] == "fleet"
    # substituted text is not expanded again: a secret may contain "${"
    assert p.kafka.config["sasl.password"] == "p@ss${word}"
    # $${NAME} is the escape for the literal text
    assert p.kafka.config["client.id"] == "fleet-fleet-${HOSTNAME}"
    assert p.kafka.config["session.timeout.ms"] == 10000
    assert p.kafka.client_settings()["sasl.password"] == "p@ss${word}"


def test_unset_variable_names_the_key_and_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERS", "127.0.0.1:9092")
    monkeypatch.delenv("KAFKA_SASL_PASSWORD", raising=False)
    path = _pipeline(tmp_path, {"sasl.password": "${KAFKA_SASL_PASSWORD}"})
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "kafka.config.sasl.password"
    assert "KAFKA_SASL_PASSWORD" in str(info.value)
    assert "not set" in str(info.value)


def test_an_empty_variable_is_substituted_and_then_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERS", "")
    with pytest.raises(ConfigError) as info:
        load(_pipeline(tmp_path, {}))
    assert info.value.key == "kafka.bootstrap_servers"


def test_expand_env_walks_tables_and_lists_and_leaves_other_values() -> None:
    doc = {"a": {"b": ["${X}", 3, "${X}${X}"], "c": True, "d": "$X {X} $$ ${"}}
    assert expand_env(doc, {"X": "1"}) == {"a": {"b": ["1", 3, "11"], "c": True, "d": "$X {X} $$ ${"}}
    assert doc["a"]["b"][0] == "${X}", "the input is not modified"
