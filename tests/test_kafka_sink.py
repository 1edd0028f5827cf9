"""Unit tests of the kafka sink's pieces that need no broker: the [sink] config, the output
schema derived from the pipeline, the positions in the offset metadata, the group metadata."""

import copy
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from confluent_kafka import TopicPartition
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer.config import load
from consumer.errors import ConfigError
from consumer.sinks.kafka import (
    ForeignOffsets,
    decode_position,
    encode_position,
    fingerprint,
    group_membership,
    key_schema,
    output_schema,
)
from consumer.types import Position

ROOT = Path(__file__).parents[1]

SCHEMA = {
    "type": "record",
    "name": "Reading",
    "namespace": "plant.sensors",
    "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "site", "type": "string"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["temp", "hum"]}},
        {"name": "line", "type": "int"},
        {"name": "ok", "type": "boolean"},
        {"name": "value", "type": "double"},
        {"name": "ticks", "type": "int"},
    ],
}
DOC: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["readings"], "group_id": "g"},
    "schema": {"path": "reading.avsc"},
    "window": {"size": "1m", "time_field": "ts"},
    "aggregate": {
        "group_by": ["site", "kind", "line", "ok"],
        "metrics": {
            "n": "count",
            "total": "sum:value",
            "ticks_sum": "sum:ticks",
            "low": "min:value",
            "top_ticks": "max:ticks",
        },
    },
    "sink": {"type": "kafka", "topic": "readings-stats", "config": {"linger.ms": 20}},
}


def _load(tmp_path: Path, doc: dict[str, Any] | None = None) -> Any:
    (tmp_path / "reading.avsc").write_text(json.dumps(SCHEMA))
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc or DOC))
    return load(path)


def _error(tmp_path: Path, change: Any) -> ConfigError:
    doc = copy.deepcopy(DOC)
    change(doc)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, doc)
    return info.value


def test_kafka_sink_config(tmp_path: Path) -> None:
    p = _load(tmp_path)
    assert (p.sink.type, p.sink.topic, dict(p.sink.config)) == ("kafka", "readings-stats", {"linger.ms": 20})


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["sink"].pop("topic"), "sink.topic", "is missing"),
        (lambda d: d["sink"].update(topic="readings"), "sink.topic", "source or dead-letter topic"),
        (lambda d: d["sink"].update(topic="readings.dlq"), "sink.topic", "source or dead-letter topic"),
        (lambda d: d["sink"].update(path="x.db"), "sink.path", "is a setting of the sqlite sink, not of kafka"),
        (lambda d: d["sink"]["config"].update({"transactional.id": "x"}), "sink.config.transactional.id", "managed"),
        (lambda d: d["sink"]["config"].update({"acks": 1}), "sink.config.acks", "managed"),
        (lambda d: d["sink"]["config"].update({"linger.ms": [1]}), "sink.config.linger.ms", "scalar"),
        (lambda d: d.update(dlq={"enabled": False}), "dlq.enabled", "no rejects table"),
        (lambda d: d["aggregate"]["metrics"].update(source_partition="count"), "aggregate.metrics.source_partition",
         "clashes"),
    ],
)  # fmt: skip
def test_kafka_sink_config_errors(tmp_path: Path, change: Any, key: str, words: str) -> None:
    err = _error(tmp_path, change)
    assert err.key == key
    assert words in str(err) and "Fix:" in str(err)


def test_output_schema_follows_the_pipeline(tmp_path: Path) -> None:
    p = _load(tmp_path)
    value = output_schema(p)
    fields = {f["name"]: f["type"] for f in value["fields"]}
    assert list(fields) == ["window_start", "window_end", "site", "kind", "line", "ok", "n", "total", "ticks_sum",
                            "low", "top_ticks", "source_topic", "source_partition"]  # fmt: skip
    assert fields["window_start"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["window_end"] == fields["window_start"]
    # group-by fields keep their input types; the enum keeps its full name and symbols
    assert (fields["site"], fields["line"], fields["ok"]) == ("string", "int", "boolean")
    assert fields["kind"] == {"type": "enum", "name": "Kind", "namespace": "plant.sensors", "symbols": ["temp", "hum"]}
    # count and integer metrics are long, floating metrics double
    assert [fields[m] for m in ("n", "total", "ticks_sum", "low", "top_ticks")] == [
        "long", "double", "long", "double", "long"]  # fmt: skip
    assert (fields["source_topic"], fields["source_partition"]) == ("string", "int")
    key = key_schema(p)
    assert [f["name"] for f in key["fields"]] == ["window_start", "site", "kind", "line", "ok"]

    # both are valid Avro and carry a record (encoded as the sink does, read back as a consumer would)
    record = {"window_start": 60_000, "window_end": 120_000, "site": "s1", "kind": "hum", "line": 3, "ok": True,
              "n": 4, "total": 1.5, "ticks_sum": 9, "low": 0.25, "top_ticks": 5, "source_topic": "readings",
              "source_partition": 2}  # fmt: skip
    for schema in (value, key):
        parsed = parse_schema(copy.deepcopy(schema))
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, record)
        got = schemaless_reader(io.BytesIO(buf.getvalue()), parse_schema(_plain(schema)), None)
        assert got == {f["name"]: record[f["name"]] for f in schema["fields"]}


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with timestamps read as ints."""
    out = copy.deepcopy(schema)
    for f in out["fields"]:
        if isinstance(f["type"], dict) and "logicalType" in f["type"]:
            f["type"] = "long"
    return out


def test_positions_round_trip_through_the_offset_metadata(tmp_path: Path) -> None:
    p = _load(tmp_path)
    fp = fingerprint(p)
    position = Position("readings", 3, 1234, 1_800_000_123_456, late_events=7, invalid_events=2)
    meta = encode_position(position, fp)
    assert len(meta) < 200  # far below the broker's offset.metadata.max.bytes (4096)
    assert decode_position(TopicPartition("readings", 3, 1234, metadata=meta), fp, "g") == position
    # a partition that has seen no event yet
    fresh = Position("readings", 0, 10, -(2**63), 0, 0)
    assert decode_position(TopicPartition("readings", 0, 10, metadata=encode_position(fresh, fp)), fp, "g") == fresh


def test_offsets_written_by_something_else_are_refused(tmp_path: Path) -> None:
    p = _load(tmp_path)
    fp = fingerprint(p)
    for metadata in ("", "some other tool", '{"eventfleet": 1}', "[1]"):
        with pytest.raises(ForeignOffsets, match="did not write"):
            decode_position(TopicPartition("readings", 0, 5, metadata=metadata), fp, "g")
    # another pipeline (other window) or another output topic: another fingerprint
    other = copy.deepcopy(DOC)
    other["window"]["size"] = "5m"
    moved = copy.deepcopy(DOC)
    moved["sink"]["topic"] = "elsewhere"
    for doc in (other, moved):
        meta = encode_position(Position("readings", 0, 5, 0), fingerprint(_load(tmp_path, doc)))
        with pytest.raises(ForeignOffsets, match="another pipeline or output topic"):
            decode_position(TopicPartition("readings", 0, 5, metadata=meta), fp, "g")


def test_group_membership_from_librdkafka_metadata() -> None:
    member = b"rdkafka-20c448c8-126f-4a07-95d5-0dfc203e0b8e"
    blob = b"CGMDv2:" + struct.pack("=i", 7) + b"my-group\x00" + member + b"\x00\x01"
    assert group_membership(blob) == (7, member.decode())
    left = b"CGMDv2:" + struct.pack("=i", -1) + b"my-group\x00\x00\x01"
    assert group_membership(left) == (-1, "")
    assert group_membership(b"CGMDv9:whatever") is None
    assert group_membership(object()) is None


def test_kafka_example_loads() -> None:
    p = load(ROOT / "examples" / "ad-stats-kafka.toml")
    assert (p.sink.type, p.sink.topic) == ("kafka", "ad-stats")
    assert [f["name"] for f in output_schema(p)["fields"]][-2:] == ["source_topic", "source_partition"]
