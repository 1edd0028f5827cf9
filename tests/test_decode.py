"""Unit tests of consumer.decode: schemaless Avro round trips and refusal of bad bytes."""

import copy
import io
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader

from consumer.decode import field_types, load_schema, make_decoder, make_encoder, make_projection

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
EVENT_TYPES = ["impression", "click", "conversion"]
DEVICES = ["desktop", "mobile", "tablet", "ctv"]
FIELDS_AD = ["event_id", "ts", "campaign_id", "ad_id", "event_type", "user_id", "country", "device", "price_micros"]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return load_schema(SCHEMA_PATH)


def _record(rng: random.Random) -> dict[str, Any]:
    def text(n: int) -> str:
        return "".join(rng.choice(string.ascii_letters + "éü€😀") for _ in range(rng.randint(0, n)))

    return {
        "event_id": text(20),
        "ts": rng.randint(-(2**40), 2**45),
        "campaign_id": text(8),
        "ad_id": text(8),
        "event_type": rng.choice(EVENT_TYPES),
        "user_id": rng.randint(-(2**63), 2**63 - 1),
        "country": text(3),
        "device": rng.choice(DEVICES),
        "price_micros": rng.randint(-(2**63), 2**63 - 1),
    }


FIXED = {
    "event_id": "e-1",
    "ts": 1_700_000_000_123,
    "campaign_id": "camp-7",
    "ad_id": "ad-3",
    "event_type": "click",
    "user_id": 42,
    "country": "FR",
    "device": "ctv",
    "price_micros": 1_250_000,
}


def test_field_types_of_ad_event(schema: dict[str, Any]) -> None:
    assert field_types(schema) == {
        "event_id": "string",
        "ts": "long",
        "campaign_id": "string",
        "ad_id": "string",
        "event_type": "enum",
        "user_id": "long",
        "country": "string",
        "device": "enum",
        "price_micros": "long",
    }


def test_round_trip_fixed_record(schema: dict[str, Any]) -> None:
    data = make_encoder(schema)(FIXED)
    decoded = make_decoder(schema)(data)
    assert decoded == FIXED
    assert type(decoded["ts"]) is int  # timestamp-millis is not turned into a datetime
    assert decoded["ts"] == 1_700_000_000_123


def test_encoding_is_plain_schemaless_avro(schema: dict[str, Any]) -> None:
    """The bytes are the bare Avro binary encoding (no header), checked by hand for a tiny record."""
    record = {
        "event_id": "a",
        "ts": 1,
        "campaign_id": "",
        "ad_id": "b",
        "event_type": "click",
        "user_id": -1,
        "country": "",
        "device": "ctv",
        "price_micros": 64,
    }
    # zig-zag varints: len 1 -> 02, 1 -> 02, len 0 -> 00, enum index 1 -> 02, -1 -> 01, 3 -> 06, 64 -> 80 01
    expected = b"\x02a" + b"\x02" + b"\x00" + b"\x02b" + b"\x02" + b"\x01" + b"\x00" + b"\x06" + b"\x80\x01"
    assert make_encoder(schema)(record) == expected
    assert make_decoder(schema)(expected) == record


def test_round_trip_random_records(schema: dict[str, Any]) -> None:
    encode, decode = make_encoder(schema), make_decoder(schema)
    rng = random.Random(17)
    for _ in range(500):
        record = _record(rng)
        decoded = decode(encode(record))
        assert decoded == record
        assert type(decoded["ts"]) is int


def test_makers_do_not_modify_the_schema(schema: dict[str, Any]) -> None:
    before = copy.deepcopy(schema)
    make_decoder(schema)
    make_encoder(schema)
    assert schema == before
    ts = next(f for f in schema["fields"] if f["name"] == "ts")
    assert ts["type"]["logicalType"] == "timestamp-millis"


def test_every_truncation_raises(schema: dict[str, Any]) -> None:
    encode, decode = make_encoder(schema), make_decoder(schema)
    rng = random.Random(3)
    for record in [FIXED, *(_record(rng) for _ in range(20))]:
        data = encode(record)
        for cut in range(len(data)):
            with pytest.raises(Exception):  # noqa: B017 - any error: the worker rejects the message
                decode(data[:cut])


@pytest.mark.parametrize("tail", [b"\x00", b"\x02a", b"extra bytes", bytes(100)])
def test_trailing_bytes_raise_value_error(schema: dict[str, Any], tail: bytes) -> None:
    data = make_encoder(schema)(FIXED) + tail
    with pytest.raises(ValueError, match=f"{len(tail)} bytes left over"):
        make_decoder(schema)(data)


def test_random_tails_raise_value_error(schema: dict[str, Any]) -> None:
    encode, decode = make_encoder(schema), make_decoder(schema)
    rng = random.Random(8)
    for _ in range(300):
        data = encode(_record(rng)) + rng.randbytes(rng.randint(1, 30))
        with pytest.raises(ValueError, match="left over"):
            decode(data)


def test_two_concatenated_records_raise(schema: dict[str, Any]) -> None:
    encode = make_encoder(schema)
    with pytest.raises(ValueError, match="left over"):
        make_decoder(schema)(encode(FIXED) + encode(FIXED))


def test_random_garbage_never_decodes_silently(schema: dict[str, Any]) -> None:
    """Garbage either raises, or (by chance a valid record) consumed every byte: appending one
    more byte to it must then raise ValueError."""
    decode = make_decoder(schema)
    names = {f["name"] for f in schema["fields"]}
    rng = random.Random(1)
    decoded_by_chance = 0
    for i in range(4_000):
        if i % 2:
            data = rng.randbytes(rng.randint(0, 40))
        else:  # small varints and letters: decodes as a record now and then
            data = bytes(rng.choice(b"\x00\x02\x04ab") for _ in range(rng.randint(0, 30)))
        try:
            record = decode(data)
        except Exception:
            continue
        decoded_by_chance += 1
        assert set(record) == names
        assert record["event_type"] in EVENT_TYPES
        assert record["device"] in DEVICES
        with pytest.raises(ValueError, match="1 bytes left over"):
            decode(data + b"\x00")
    assert 0 < decoded_by_chance < 4_000  # both branches ran


def test_wrong_enum_index_raises(schema: dict[str, Any]) -> None:
    data = bytearray(make_encoder(schema)(FIXED))
    # FIXED: event_id(4) ts(6) campaign_id(7) ad_id(5) -> event_type index byte at offset 22
    assert data[22] == 0x02
    data[22] = 0x0A  # index 5: EventType has 3 symbols
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises IndexError here
        make_decoder(schema)(bytes(data))


# ---------------------------------------------------------------------------------------------
# the projection: the worker's decoder, only the fields it needs, the same acceptance as fastavro

EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "by", "type": "bytes"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["red", "green", "blue"]}},
        {"name": "e2", "type": "Color"},
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
        {"name": "arr", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "string"}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "r", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "x", "type": "long"}, {"name": "c", "type": "Color"}]}},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}  # fmt: skip
COLORS = ["red", "green", "blue"]


def _everything(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        return "".join(rng.choice("ab€😀") for _ in range(rng.randint(0, 4)))

    return {
        "n": None,
        "b": rng.random() < 0.5,
        "i": rng.randint(-(2**31), 2**31 - 1),
        "l": rng.randint(-(2**63), 2**63 - 1),
        "f": float(rng.randint(-1000, 1000)) / 4,
        "d": rng.uniform(-1e300, 1e300),
        "by": rng.randbytes(rng.randint(0, 5)),
        "s": text(),
        "e": rng.choice(COLORS),
        "e2": rng.choice(COLORS),
        "fx": rng.randbytes(4),
        "arr": [rng.randint(-(2**40), 2**40) for _ in range(rng.randint(0, 3))],
        "m": {text(): text() for _ in range(rng.randint(0, 3))},
        "u": rng.choice([None, text(), rng.randint(-9, 9)]),
        "r": {"x": rng.randint(-(2**20), 2**20), "c": rng.choice(COLORS)},
        "t": rng.randint(0, 2**45),
    }


def _reference(schema: dict[str, Any]) -> Callable[[bytes], dict[str, Any]]:
    """Ground truth from fastavro's public API alone: the record, or an exception."""
    parsed = parse_schema(json.loads(json.dumps(schema).replace('"logicalType"', '"x-logical"')))

    def decode(value: bytes) -> dict[str, Any]:
        buf = io.BytesIO(value)
        record: dict[str, Any] = schemaless_reader(buf, parsed, None)  # type: ignore[assignment]
        if buf.tell() != len(value):
            raise ValueError("left over")
        return record

    return decode


def _mutations(rng: random.Random, value: bytes) -> list[bytes]:
    """Broken copies of a valid value: cut, a byte changed, a byte inserted or removed, a tail."""
    at = rng.randrange(len(value))
    return [
        value[: rng.randrange(len(value))],
        value[:at] + bytes([rng.randrange(256)]) + value[at + 1 :],
        value[:at] + bytes([rng.choice((0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF))]) + value[at + 1 :],
        value[:at] + bytes([rng.randrange(256)]) + value[at:],
        value[:at] + value[at + 1 :],
        value + rng.randbytes(rng.randint(1, 3)),
    ]


def _outcome(decode: Callable[[bytes], Any], value: bytes) -> Any:
    try:
        return repr(decode(value))  # repr: a NaN float equals itself
    except Exception:
        return "raised"


def _pick(record: dict[str, Any], fields: list[str]) -> tuple[Any, ...]:
    return tuple(record[f] for f in fields)


def _assert_same_as_reference(schema: dict[str, Any], fields: list[str], records: list[dict[str, Any]]) -> int:
    """For valid values and broken copies of them, the projection raises exactly when fastavro's
    public reader does, and otherwise returns that record's values of ``fields``."""
    encode, reference, projection = make_encoder(schema), _reference(schema), make_projection(schema, fields)
    assert projection.__code__.co_filename == "<eventfleet projection>"  # the generated fast path
    rng = random.Random(",".join(fields))
    accepted = rejected = 0
    for record in records:
        value = encode(record)
        assert projection(value) == tuple(record[f] for f in fields)
        for broken in _mutations(rng, value):
            expected = _outcome(lambda v: _pick(reference(v), fields), broken)
            assert _outcome(projection, broken) == expected, broken
            accepted, rejected = accepted + (expected != "raised"), rejected + (expected == "raised")
    return accepted * rejected


@pytest.mark.parametrize(
    "fields",
    [["ts", "campaign_id", "event_type", "price_micros"], ["price_micros", "ts"], ["device"], [], FIELDS_AD],
)
def test_projection_equals_fastavro_on_ad_events(schema: dict[str, Any], fields: list[str]) -> None:
    rng = random.Random(5)
    assert _assert_same_as_reference(schema, fields, [FIXED, *(_record(rng) for _ in range(400))]) > 0


@pytest.mark.parametrize("fields", [["t", "e", "l"], ["u", "arr", "m", "r"], ["n", "b", "f", "d", "by", "fx"], ["e2"]])
def test_projection_equals_fastavro_on_every_avro_type(fields: list[str]) -> None:
    rng = random.Random(6)
    assert _assert_same_as_reference(EVERYTHING, fields, [_everything(rng) for _ in range(400)]) > 0


def test_projection_rejects_bad_values_in_fields_it_does_not_keep(schema: dict[str, Any]) -> None:
    """Invalid UTF-8 in event_id, an unknown device index: the event is undecodable, as with
    the full decoder, although the worker does not use those fields."""
    projection = make_projection(schema, ["ts", "campaign_id"])
    value = make_encoder(schema)(FIXED)
    assert value[1:4] == b"e-1"
    with pytest.raises(UnicodeDecodeError):
        projection(value[:1] + b"\xff\xfe1" + value[4:])
    assert value[-5] == 0x06  # device: index 3 (ctv), then price_micros in 4 bytes
    with pytest.raises(IndexError):
        projection(value[:-5] + b"\x08" + value[-4:])


def test_projection_rejects_unknown_fields(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no field 'nope'"):
        make_projection(schema, ["ts", "nope"])


def test_projection_of_a_schema_with_odd_field_names() -> None:
    """Field names are only data in the generated code (fastavro accepts any string)."""
    schema = {"type": "record", "name": "Odd", "fields": [
        {"name": "a\nraise SystemExit", "type": "long"}, {"name": "b'\"", "type": "string"}]}  # fmt: skip
    value = make_encoder(schema)({"a\nraise SystemExit": 5, "b'\"": "x"})
    assert make_projection(schema, ["b'\"", "a\nraise SystemExit"])(value) == ("x", 5)
    assert make_projection(schema, ["b'\""]).__code__.co_filename == "<eventfleet projection>"


@pytest.mark.parametrize("fields", [["ts", "campaign_id", "event_type", "price_micros"], ["device"], []])
def test_the_fallback_projection_equals_the_generated_one(schema: dict[str, Any], fields: list[str]) -> None:
    """Without fastavro's per-type readers (another fastavro version), the projection picks the
    fields from the decoded record: the same values, the same refusals."""
    from consumer.decode import _dict_projection

    generated, fallback = make_projection(schema, fields), _dict_projection(make_decoder(schema), fields)
    assert fallback.__code__.co_filename != "<eventfleet projection>"
    encode, rng = make_encoder(schema), random.Random(9)
    for _ in range(300):
        value = encode(_record(rng))
        assert fallback(value) == generated(value)
        for broken in _mutations(rng, value):
            assert _outcome(fallback, broken) == _outcome(generated, broken)


def test_a_fastavro_without_the_per_field_readers_is_said(
    schema: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fields = ["ts", "campaign_id"]
    generated = make_projection(schema, fields)
    monkeypatch.delattr("fastavro._read.read_utf8")
    with caplog.at_level("WARNING", logger="consumer.decode"):
        fallback = make_projection(schema, fields)
    assert "lacks the per-field readers eventfleet uses: decoding whole records" in caplog.text
    assert fallback.__code__.co_filename != "<eventfleet projection>"
    value = make_encoder(schema)(FIXED)
    assert fallback(value) == generated(value) == (FIXED["ts"], FIXED["campaign_id"])
