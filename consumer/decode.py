"""Avro payload to field values, with fastavro (the fast path lives here).

Message values are schemaless Avro: the bytes of one record written with the pipeline's
writer schema, no header. Logical types are decoded as their underlying type (a
``timestamp-millis`` stays an int of epoch ms), which is both what windowing needs and faster.
"""

import copy
import json
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

Record = dict[str, Any]
Decoder = Callable[[bytes], Record]

NUMERIC = ("int", "long", "float", "double")
GROUPABLE = ("string", "int", "long", "boolean", "enum", "float", "double")


def load_schema(path: Path) -> dict[str, Any]:
    """Read and parse an ``.avsc`` file; raises ValueError/OSError with the cause."""
    with open(path, encoding="utf-8") as f:
        return check_schema(json.load(f))


def check_schema(schema: Any) -> dict[str, Any]:
    """Validate an already-read writer schema (JSON); raises ValueError with the cause."""
    parse_schema(schema)  # validates; raises SchemaParseException on a bad schema
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ValueError("the top-level schema must be a record")
    return dict(schema)


def field_types(schema: dict[str, Any]) -> dict[str, str]:
    """Top-level field name -> a simple type name: an Avro primitive, ``enum``,
    ``nullable`` (a union with null) or ``complex``."""
    out: dict[str, str] = {}
    for field in schema["fields"]:
        t = field["type"]
        if isinstance(t, list):
            out[field["name"]] = "nullable" if "null" in t else "complex"
        elif isinstance(t, dict):
            kind = t.get("type")
            if t.get("logicalType") == "timestamp-micros":
                out[field["name"]] = "timestamp-micros"
            elif kind in NUMERIC or kind in ("string", "boolean", "bytes", "enum"):
                out[field["name"]] = str(kind)
            else:
                out[field["name"]] = "complex"
        else:
            out[field["name"]] = str(t)
    return out


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


DECODERS = ("fastavro", "cavro")


def make_decoder(schema: dict[str, Any], backend: str = "fastavro") -> Decoder:
    """Return ``decode(value) -> record`` for schemaless Avro values of ``schema``.

    Raises on bytes that are not a record of this schema (truncated, wrong schema, garbage);
    the worker turns that into a rejected message, never a crash. ``backend`` is fastavro (the
    default, which also rejects bytes left over after the record) or cavro (optional, about
    twice as fast; it cannot tell whether bytes were left over).
    """
    plain = _without_logical_types(copy.deepcopy(schema))
    if backend == "cavro":
        return _cavro_decoder(plain)
    named: dict[str, Any] = {}
    parsed = parse_schema(plain, named_schemas=named)

    def decode(value: bytes) -> Record:
        buf = BytesIO(value)
        record: Record = schemaless_reader(buf, parsed, None)  # type: ignore[assignment]  # a record schema
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} bytes left over after the record")
        return record

    return _fastavro_internal(plain, parsed, named, decode) or decode


def _fastavro_internal(schema: dict[str, Any], parsed: Any, named: dict[str, Any], public: Decoder) -> Decoder | None:
    """The same decoder on fastavro's internal ``read_record`` with its arguments resolved once,
    without ``schemaless_reader``'s per-call set-up and type dispatch (about 0.5 us of 3 us an
    event). Used only if it exists and decodes a probe record exactly as the public API does;
    else None."""
    try:
        from fastavro._read import read_record  # type: ignore[attr-defined]
    except ImportError:
        return None
    names = {"writer": named, "reader": named}
    options: dict[str, Any] = {}

    def decode(value: bytes) -> Record:
        buf = BytesIO(value)
        record: Record = read_record(buf, parsed, names, None, options)
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} bytes left over after the record")
        return record

    try:
        probe = make_encoder(schema)(_probe_record(schema))
        if decode(probe) == public(probe):
            return decode
    except Exception:  # another fastavro version: the public API it is
        pass
    return None


def _probe_record(schema: dict[str, Any]) -> Record:
    """A record with a value for every top-level field of the simple types; others left out."""
    samples = {"string": "probe", "int": 7, "long": 2**40, "float": 0.5, "double": 0.25, "boolean": True,
               "bytes": b"probe"}  # fmt: skip
    record: Record = {}
    for f in schema["fields"]:
        t = f["type"]
        kind = t.get("type") if isinstance(t, dict) else t
        if kind == "enum":
            record[f["name"]] = t["symbols"][-1]
        elif isinstance(kind, str) and kind in samples:
            record[f["name"]] = samples[kind]
        elif isinstance(t, list) and "null" in t:
            record[f["name"]] = None
        else:
            raise ValueError(f"no probe value for {f['name']}")
    return record


def _cavro_decoder(schema: dict[str, Any]) -> Decoder:
    import cavro  # optional: pip install 'eventfleet[cavro]'

    decode: Decoder = cavro.Schema(json.dumps(schema), options=cavro.Options(record_decodes_to_dict=True)).binary_decode
    return decode


def cavro_available() -> bool:
    try:
        import cavro  # noqa: F401
    except ImportError:
        return False
    return True


def make_encoder(schema: dict[str, Any]) -> Callable[[Record], bytes]:
    """Return ``encode(record) -> bytes`` (schemaless Avro), for the load generator."""
    parsed = parse_schema(_without_logical_types(copy.deepcopy(schema)))

    def encode(record: Record) -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    return encode
