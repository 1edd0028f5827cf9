"""Unit tests of consumer.config: the example loads, and every mistake names its key."""

import copy
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from consumer.aggregate import Metric
from consumer.config import MANAGED_KAFKA_KEYS, Pipeline, load
from consumer.errors import ConfigError

ROOT = Path(__file__).parents[1]
SCHEMA = ROOT / "schemas" / "ad_event.avsc"
EXAMPLE = ROOT / "examples" / "ad-stats.toml"

BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": "g"},
    "schema": {"path": str(SCHEMA)},
    "window": {"size": "1m", "grace": "30s", "time_field": "ts"},
    "aggregate": {
        "group_by": ["campaign_id", "event_type"],
        "metrics": {"events": "count", "spend": "sum:price_micros", "top": "max:price_micros"},
    },
    "sink": {"type": "sqlite", "path": "out.db", "table": "stats"},
    "flush": {"interval": "5s"},
}


def _doc() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def _error(tmp_path: Path, doc: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, doc))
    return info.value


def _assert_names(err: ConfigError, key: str) -> None:
    assert err.key == key
    assert f"'{key}'" in str(err)


# ---------------------------------------------------------------------------------------------
# valid files


def test_example_loads() -> None:
    p = load(EXAMPLE)
    assert isinstance(p, Pipeline)
    assert p.source == EXAMPLE
    assert p.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert p.kafka.topics == ("ad-events",)
    assert p.kafka.group_id == "ad-stats"
    assert dict(p.kafka.config) == {"session.timeout.ms": 10000}
    assert p.schema_path.resolve() == SCHEMA.resolve()
    assert p.schema["name"] == "AdEvent"
    assert p.field_types["ts"] == "long"
    assert p.field_types["event_type"] == "enum"
    assert (p.window.size_ms, p.window.grace_ms, p.window.time_field) == (60_000, 30_000, "ts")
    assert p.aggregate.group_by == ("campaign_id", "event_type")
    assert p.aggregate.metrics == (
        Metric("events", "count"),
        Metric("spend", "sum", "price_micros"),
        Metric("min_price", "min", "price_micros"),
        Metric("max_price", "max", "price_micros"),
    )
    assert p.sink.type == "sqlite"
    assert p.sink.path == EXAMPLE.parent / "ad-stats.db"
    assert p.sink.table == "ad_stats"
    assert p.flush_interval_ms == 5_000
    assert p.column_types() == {
        "window_start": "long",
        "window_end": "long",
        "campaign_id": "string",
        "event_type": "enum",
        "events": "long",
        "spend": "long",
        "min_price": "long",
        "max_price": "long",
    }


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "event.avsc").write_text(SCHEMA.read_text(encoding="utf-8"), encoding="utf-8")
    doc = _doc()
    doc["schema"]["path"] = "event.avsc"
    doc["sink"]["path"] = "../results.db"
    p = load(_write(sub, doc))
    assert p.schema_path == sub / "event.avsc"
    assert p.sink.path == sub / "../results.db"
    assert p.sink.path.resolve() == (tmp_path / "results.db").resolve()


def test_defaults(tmp_path: Path) -> None:
    doc = _doc()
    del doc["flush"]
    del doc["window"]["grace"]
    del doc["window"]["time_field"]
    p = load(_write(tmp_path, doc))
    assert p.flush_interval_ms == 5_000
    assert p.window.grace_ms == 0
    assert p.window.time_field is None


def test_single_topic_string_is_accepted(tmp_path: Path) -> None:
    doc = _doc()
    doc["kafka"]["topics"] = "ad-events"
    assert load(_write(tmp_path, doc)).kafka.topics == ("ad-events",)


# ---------------------------------------------------------------------------------------------
# files that cannot be read


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    _assert_names(info.value, "--config")
    assert "nope.toml" in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[kafka\nbootstrap_servers = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    _assert_names(info.value, str(path))
    assert "not valid TOML" in str(info.value)


def test_missing_schema_file(tmp_path: Path) -> None:
    doc = _doc()
    doc["schema"]["path"] = "missing.avsc"
    err = _error(tmp_path, doc)
    _assert_names(err, "schema.path")
    assert "missing.avsc" in str(err)


def test_decoder_fastavro_is_accepted_and_others_are_named(tmp_path: Path) -> None:
    doc = _doc()
    doc["schema"]["decoder"] = "fastavro"
    assert load(_write(tmp_path, doc)).event_fields() == ("ts", "campaign_id", "event_type", "price_micros")
    doc["schema"]["decoder"] = "avro-c"
    err = _error(tmp_path, doc)
    _assert_names(err, "schema.decoder")
    assert "unknown decoder 'avro-c'" in str(err) and "fastavro" in str(err)


def test_decoder_cavro_is_deprecated_not_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """cavro was an optional decoder; the fastavro projection is faster. Old files still load."""
    doc = _doc()
    doc["schema"]["decoder"] = "cavro"
    with caplog.at_level("WARNING", logger="consumer.config"):
        pipeline = load(_write(tmp_path, doc))
    assert pipeline.event_fields() == ("ts", "campaign_id", "event_type", "price_micros")
    assert "schema.decoder = 'cavro' is deprecated and ignored" in caplog.text


def test_schema_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "bad.avsc").write_text('"string"', encoding="utf-8")
    doc = _doc()
    doc["schema"]["path"] = "bad.avsc"
    _assert_names(_error(tmp_path, doc), "schema.path")


# ---------------------------------------------------------------------------------------------
# sections


def test_unknown_top_level_section(tmp_path: Path) -> None:
    doc = _doc()
    doc["extras"] = {"x": 1}
    err = _error(tmp_path, doc)
    _assert_names(err, "extras")
    assert "unknown section" in str(err)


@pytest.mark.parametrize("section", ["kafka", "schema", "window", "aggregate", "sink"])
def test_missing_required_section(tmp_path: Path, section: str) -> None:
    doc = _doc()
    del doc[section]
    err = _error(tmp_path, doc)
    _assert_names(err, section)
    assert "missing" in str(err)


def test_unknown_sink_type(tmp_path: Path) -> None:
    doc = _doc()
    doc["sink"]["type"] = "mysql"
    err = _error(tmp_path, doc)
    _assert_names(err, "sink.type")
    assert "mysql" in str(err) and "postgres" in str(err)


def _postgres_doc(**sink: Any) -> dict[str, Any]:
    doc = _doc()
    doc["sink"] = {"type": "postgres", "table": "stats", **sink}
    return doc


def test_postgres_sink(tmp_path: Path) -> None:
    p = load(_write(tmp_path, _postgres_doc(dsn="postgresql://ef@db.example:5433/stats?sslmode=require")))
    assert (p.sink.type, p.sink.table, p.sink.path) == ("postgres", "stats", None)
    assert p.sink.dsn == "postgresql://ef@db.example:5433/stats?sslmode=require"
    assert load(_write(tmp_path, _postgres_doc(dsn="host=db port=5433 dbname=stats"))).sink.dsn is not None


def test_postgres_sink_without_dsn_uses_the_environment(tmp_path: Path) -> None:
    assert load(_write(tmp_path, _postgres_doc())).sink.dsn is None


def test_dsn_for_sqlite(tmp_path: Path) -> None:
    doc = _doc()
    doc["sink"]["dsn"] = "postgresql://localhost/stats"
    err = _error(tmp_path, doc)
    _assert_names(err, "sink.dsn")
    assert "postgres sink, not of sqlite" in str(err) and 'type = "postgres"' in str(err)


def test_path_for_postgres(tmp_path: Path) -> None:
    err = _error(tmp_path, _postgres_doc(path="out.db"))
    _assert_names(err, "sink.path")
    assert "sqlite sink, not of postgres" in str(err)


def test_unknown_sink_key(tmp_path: Path) -> None:
    err = _error(tmp_path, _postgres_doc(schema="stats"))
    _assert_names(err, "sink.schema")
    assert "type, dsn, table" in str(err)


@pytest.mark.parametrize("dsn", ["postgresql://[broken", "host=db colour=blue", "", 5432])
def test_bad_dsn(tmp_path: Path, dsn: Any) -> None:
    err = _error(tmp_path, _postgres_doc(dsn=dsn))
    _assert_names(err, "sink.dsn")
    assert "Fix:" in str(err)


def test_postgres_table_name_too_long(tmp_path: Path) -> None:
    assert load(_write(tmp_path, _postgres_doc(dsn="host=db", table="t" * 51))).sink.table == "t" * 51
    err = _error(tmp_path, _postgres_doc(dsn="host=db", table="t" * 52))
    _assert_names(err, "sink.table")
    assert "_checkpoints must fit in 63 bytes" in str(err)


def test_postgres_column_name_too_long(tmp_path: Path) -> None:
    doc = _postgres_doc(dsn="host=db")
    doc["aggregate"]["metrics"] = {"m" * 64: "count"}
    _assert_names(_error(tmp_path, doc), f"aggregate.metrics.{'m' * 64}")


def test_sink_folder_missing(tmp_path: Path) -> None:
    doc = _doc()
    doc["sink"]["path"] = "no/such/dir/out.db"
    _assert_names(_error(tmp_path, doc), "sink.path")


@pytest.mark.parametrize("table", ["", "1abc", "a-b", "x y", 'x"y'])
def test_sink_table_not_identifier(tmp_path: Path, table: str) -> None:
    doc = _doc()
    doc["sink"]["table"] = table
    _assert_names(_error(tmp_path, doc), "sink.table")


# ---------------------------------------------------------------------------------------------
# kafka


@pytest.mark.parametrize("name", sorted(MANAGED_KAFKA_KEYS))
def test_managed_kafka_config_key(tmp_path: Path, name: str) -> None:
    doc = _doc()
    doc["kafka"]["config"] = {"session.timeout.ms": 10000, name: "x"}
    err = _error(tmp_path, doc)
    _assert_names(err, f"kafka.config.{name}")
    assert "managed by eventfleet" in str(err)


def test_enable_auto_commit_rejected_even_false(tmp_path: Path) -> None:
    doc = _doc()
    doc["kafka"]["config"] = {"enable.auto.commit": False}
    _assert_names(_error(tmp_path, doc), "kafka.config.enable.auto.commit")


def test_unmanaged_kafka_config_passes_through(tmp_path: Path) -> None:
    doc = _doc()
    doc["kafka"]["config"] = {"fetch.min.bytes": 1, "client.id": "me", "check.crcs": True}
    assert dict(load(_write(tmp_path, doc)).kafka.config) == {
        "fetch.min.bytes": 1,
        "client.id": "me",
        "check.crcs": True,
    }


@pytest.mark.parametrize("topics", [[], [""], [1], {"a": 1}])
def test_bad_topics(tmp_path: Path, topics: Any) -> None:
    doc = _doc()
    doc["kafka"]["topics"] = topics
    _assert_names(_error(tmp_path, doc), "kafka.topics")


def test_unknown_kafka_key(tmp_path: Path) -> None:
    doc = _doc()
    doc["kafka"]["group"] = "oops"
    _assert_names(_error(tmp_path, doc), "kafka.group")


# ---------------------------------------------------------------------------------------------
# window and flush durations


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("window", "size", "1 minute"),
        ("window", "size", "60"),
        ("window", "size", 60),
        ("window", "size", "0s"),
        ("window", "size", "-1m"),
        ("window", "grace", "soon"),
        ("window", "grace", "-1s"),
        ("window", "grace", 30),
        ("window", "grace", "1.5s"),
        ("flush", "interval", "fast"),
        ("flush", "interval", "0ms"),
        ("flush", "interval", 5),
        ("flush", "interval", ""),
    ],
)
def test_bad_duration(tmp_path: Path, section: str, name: str, value: Any) -> None:
    doc = _doc()
    doc[section][name] = value
    _assert_names(_error(tmp_path, doc), f"{section}.{name}")


def test_missing_window_size(tmp_path: Path) -> None:
    doc = _doc()
    del doc["window"]["size"]
    _assert_names(_error(tmp_path, doc), "window.size")


@pytest.mark.parametrize("field", ["campaign_id", "event_type", "event_id"])
def test_time_field_of_wrong_type(tmp_path: Path, field: str) -> None:
    doc = _doc()
    doc["window"]["time_field"] = field
    err = _error(tmp_path, doc)
    _assert_names(err, "window.time_field")
    assert field in str(err)


@pytest.mark.parametrize("field", ["nope", 5])
def test_time_field_not_in_schema(tmp_path: Path, field: Any) -> None:
    doc = _doc()
    doc["window"]["time_field"] = field
    _assert_names(_error(tmp_path, doc), "window.time_field")


def test_time_field_other_long_is_accepted(tmp_path: Path) -> None:
    doc = _doc()
    doc["window"]["time_field"] = "user_id"
    assert load(_write(tmp_path, doc)).window.time_field == "user_id"


# ---------------------------------------------------------------------------------------------
# aggregate


@pytest.mark.parametrize("spec", ["avg:price_micros", "median", "COUNT", "count:price_micros", "sum"])
def test_bad_metric_spec(tmp_path: Path, spec: str) -> None:
    doc = _doc()
    doc["aggregate"]["metrics"]["weird"] = spec
    err = _error(tmp_path, doc)
    _assert_names(err, "aggregate.metrics.weird")


def test_metric_field_not_in_schema(tmp_path: Path) -> None:
    doc = _doc()
    doc["aggregate"]["metrics"]["total"] = "sum:cost"
    err = _error(tmp_path, doc)
    _assert_names(err, "aggregate.metrics.total")
    assert "cost" in str(err)


@pytest.mark.parametrize("spec", ["sum:campaign_id", "min:country", "max:event_type", "sum:device"])
def test_metric_on_non_numeric_field(tmp_path: Path, spec: str) -> None:
    doc = _doc()
    doc["aggregate"]["metrics"]["bad"] = spec
    err = _error(tmp_path, doc)
    _assert_names(err, "aggregate.metrics.bad")
    assert spec.partition(":")[2] in str(err)


@pytest.mark.parametrize("name", ["window_start", "window_end", "campaign_id"])
def test_metric_name_clash(tmp_path: Path, name: str) -> None:
    doc = _doc()
    doc["aggregate"]["metrics"][name] = "count"
    _assert_names(_error(tmp_path, doc), f"aggregate.metrics.{name}")


def test_no_metrics(tmp_path: Path) -> None:
    doc = _doc()
    doc["aggregate"]["metrics"] = {}
    _assert_names(_error(tmp_path, doc), "aggregate.metrics")


def test_group_by_field_not_in_schema(tmp_path: Path) -> None:
    doc = _doc()
    doc["aggregate"]["group_by"] = ["campaign_id", "region"]
    err = _error(tmp_path, doc)
    _assert_names(err, "aggregate.group_by")
    assert "region" in str(err)


@pytest.mark.parametrize("group_by", ["campaign_id", ["campaign_id", "campaign_id"], ["bad-name"]])
def test_bad_group_by(tmp_path: Path, group_by: Any) -> None:
    doc = _doc()
    doc["aggregate"]["group_by"] = group_by
    _assert_names(_error(tmp_path, doc), "aggregate.group_by")
