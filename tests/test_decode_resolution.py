"""Unit tests of decoding values written with another version of the schema (schema evolution):
the generated resolving projection must accept, refuse and resolve exactly as fastavro's own
``schemaless_reader`` with the writer and reader schemas does (the ground truth here)."""

import copy
import io
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from consumer.decode import ResolutionError, make_resolving_projection, projection_source

SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "ad_event.avsc").read_text())
FIELDS = ["ts", "campaign_id", "event_type", "price_micros"]
HEADER = struct.pack(">bI", 0, 7)  # a schema registry's frame: magic byte, schema id


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without logical types (eventfleet reads timestamps as their long)."""
    text = json.dumps(schema).replace('"logicalType": "timestamp-millis"', '"x": 0')
    return dict(json.loads(text))


def _v2(reader: dict[str, Any]) -> dict[str, Any]:
    """A later writer version: fields reordered, one added with a default, price narrowed to an
    int in the writer (the reader widens it to long), an extra enum symbol the reader lacks."""
    w = copy.deepcopy(reader)
    fields = {f["name"]: f for f in w["fields"]}
    fields["price_micros"]["type"] = "int"
    fields["device"]["type"]["symbols"] = [*fields["device"]["type"]["symbols"], "watch"]
    order = ["price_micros", "campaign_id", "event_id", "device", "ts", "user_id", "event_type", "ad_id", "country"]
    w["fields"] = [fields[n] for n in order] + [{"name": "region", "type": "string", "default": "eu"}]
    return w


def _expected(writer: dict[str, Any], reader: dict[str, Any], value: bytes, fields: list[str]) -> Any:
    """The ground truth, from fastavro's public reader: the value must be a whole record of the
    writer schema (read alone: fastavro's resolving reader skips the fields the reader lacks
    without noticing that they are cut off), and its resolution to the wanted fields of the
    reader schema gives the values."""
    projected = {**reader, "fields": [f for f in reader["fields"] if f["name"] in fields]}
    try:
        for reader_schema in (None, parse_schema(_plain(projected))):
            buf = io.BytesIO(value)
            buf.seek(len(HEADER))
            record: Any = schemaless_reader(buf, parse_schema(_plain(writer)), reader_schema)
            if buf.tell() != len(value):
                return ValueError
    except Exception as e:
        return type(e)
    return tuple(record[f] for f in fields)


def _encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(_plain(schema)), record)
    return HEADER + buf.getvalue()


def _decoded(project: Any, value: bytes) -> Any:
    try:
        return project(value)
    except Exception as e:
        return type(e)


def test_a_later_writer_version_resolves_like_fastavro() -> None:
    writer = _v2(SCHEMA)
    project = make_resolving_projection(writer, SCHEMA, FIELDS, len(HEADER))
    source = projection_source(writer, FIELDS, SCHEMA, len(HEADER))[0]
    assert "_read_data(fo, T0, names, R0, options)" in source  # the widened field is promoted
    assert "read_utf8(fo)  # region" in source  # the added field is read and dropped
    records = list(generate_many(parse_schema(_plain(writer)), 300))
    for record in records:
        value = _encode(writer, record)
        got = project(value)
        assert got == _expected(writer, SCHEMA, value, FIELDS)
        assert got == (record["ts"], record["campaign_id"], record["event_type"], record["price_micros"])
        assert isinstance(got[3], int)


def test_broken_values_are_refused_exactly_when_fastavro_refuses_them() -> None:
    writer = _v2(SCHEMA)
    fields = ["ts", "device", "country"]  # device: a symbol the reader lacks, with no default there
    project = make_resolving_projection(writer, SCHEMA, fields, len(HEADER))
    rng = random.Random(5)
    refused = 0
    for record in generate_many(parse_schema(_plain(writer)), 200):
        value = _encode(writer, record)
        for broken in (value, value[:-1], value + b"\x00", value[: rng.randrange(len(HEADER), len(value))]):
            expected = _expected(writer, SCHEMA, broken, fields)
            got = _decoded(project, broken)
            assert (got if isinstance(got, tuple) else "refused") == (
                expected if isinstance(expected, tuple) else "refused"
            ), broken
            refused += not isinstance(got, tuple)
    assert refused > 200  # the truncated and padded copies, and the "watch" devices


def test_an_enum_default_takes_unknown_symbols() -> None:
    reader = copy.deepcopy(SCHEMA)
    device = next(f for f in reader["fields"] if f["name"] == "device")
    device["type"]["default"] = "desktop"
    writer = _v2(reader)
    project = make_resolving_projection(writer, reader, ["device"], len(HEADER))
    record = dict(next(iter(generate_many(parse_schema(_plain(writer)), 1))), device="watch")
    assert project(_encode(writer, record)) == ("desktop",)


def test_a_field_the_writer_lacks_takes_the_reader_default() -> None:
    reader = copy.deepcopy(SCHEMA)
    reader["fields"].append({"name": "weight", "type": "long", "default": 3})
    project = make_resolving_projection(SCHEMA, reader, ["campaign_id", "weight"], len(HEADER))
    record = next(iter(generate_many(parse_schema(_plain(SCHEMA)), 1)))
    assert project(_encode(SCHEMA, record)) == (record["campaign_id"], 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w["fields"].pop(8), "no field 'price_micros'"),
        (lambda w: w["fields"][8].update(type="string"), "'price_micros' is string"),
        (lambda w: w["fields"][8].update(type="double"), "'price_micros' is double"),
    ],
)
def test_a_writer_that_cannot_give_a_field_is_refused_naming_it(change: Any, message: str) -> None:
    writer = copy.deepcopy(SCHEMA)
    change(writer)
    with pytest.raises(ResolutionError, match=message):
        make_resolving_projection(writer, SCHEMA, FIELDS, len(HEADER))


def test_a_nullable_writer_field_refuses_only_its_nulls() -> None:
    writer = copy.deepcopy(SCHEMA)
    writer["fields"][8]["type"] = ["null", "long"]
    project = make_resolving_projection(writer, SCHEMA, FIELDS, len(HEADER))
    record = next(iter(generate_many(parse_schema(_plain(SCHEMA)), 1)))
    assert project(_encode(writer, record))[3] == record["price_micros"]
    with pytest.raises(Exception, match=r"(?i)schema"):
        project(_encode(writer, {**record, "price_micros": None}))


def test_a_renamed_field_is_found_by_its_alias() -> None:
    writer = copy.deepcopy(SCHEMA)
    writer["fields"][2]["name"] = "campaign"
    reader = copy.deepcopy(SCHEMA)
    reader["fields"][2]["aliases"] = ["campaign"]
    project = make_resolving_projection(writer, reader, ["campaign_id"], len(HEADER))
    record = next(iter(generate_many(parse_schema(_plain(writer)), 1)))
    assert project(_encode(writer, record)) == (record["campaign"],)
