"""Unit tests of consumer.decode: schemaless Avro round trips and refusal of bad bytes."""

import copy
import random
import string
from pathlib import Path
from typing import Any

import pytest

from consumer.decode import field_types, load_schema, make_decoder, make_encoder

SCHEMA_PATH = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
EVENT_TYPES = ["impression", "click", "conversion"]
DEVICES = ["desktop", "mobile", "tablet", "ctv"]


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
# the optional cavro backend: the same records as fastavro, the same refusals of broken bytes


def test_cavro_decodes_what_fastavro_decodes(schema: dict[str, Any]) -> None:
    pytest.importorskip("cavro")
    encode = make_encoder(schema)
    fast, cavro = make_decoder(schema, "fastavro"), make_decoder(schema, "cavro")
    rng = random.Random(11)
    for _ in range(500):
        record = _record(rng)
        value = encode(record)
        assert cavro(value) == record == fast(value)
        assert isinstance(cavro(value)["ts"], int)


def test_cavro_rejects_truncated_values(schema: dict[str, Any]) -> None:
    pytest.importorskip("cavro")
    value = make_encoder(schema)(FIXED)
    cavro = make_decoder(schema, "cavro")
    for cut in range(len(value)):
        with pytest.raises(Exception):  # noqa: B017 - any error: the worker keeps it as a reject
            cavro(value[:cut])
