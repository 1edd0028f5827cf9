"""Avro payload to field values, with fastavro (the fast path lives here).

Message values are schemaless Avro: the bytes of one record written with the pipeline's
writer schema, no header. Logical types are decoded as their underlying type (a
``timestamp-millis`` stays an int of epoch ms), which is both what windowing needs and faster.
"""

import copy
import json
import logging
import operator
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import __version__ as fastavro_version
from fastavro import parse_schema, schemaless_reader, schemaless_writer

log = logging.getLogger(__name__)

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


def make_decoder(schema: dict[str, Any]) -> Decoder:
    """Return ``decode(value) -> record`` for schemaless Avro values of ``schema``.

    Raises on bytes that are not a record of this schema (truncated, wrong schema, garbage,
    bytes left over after the record); the worker turns that into a rejected message, never a
    crash.
    """
    parsed = parse_schema(_without_logical_types(copy.deepcopy(schema)))

    def decode(value: bytes) -> Record:
        buf = BytesIO(value)
        record: Record = schemaless_reader(buf, parsed, None)  # type: ignore[assignment]  # a record schema
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} bytes left over after the record")
        return record

    return decode


Projection = Callable[[bytes], tuple[Any, ...]]

# fastavro's reader of each primitive type: the functions its record reader calls per field
PRIMITIVE_READERS = {"boolean": "read_boolean", "int": "read_long", "long": "read_long", "float": "read_float",
                     "double": "read_double", "bytes": "read_bytes", "string": "read_utf8"}  # fmt: skip


def make_projection(schema: dict[str, Any], fields: Sequence[str]) -> Projection:
    """Return ``decode(value) -> tuple``: the values of ``fields`` (top-level field names, in
    that order) of a schemaless Avro record of ``schema``: what the worker needs of an event.

    It accepts and rejects exactly the values :func:`make_decoder` does: every field is read and
    checked (strings are valid UTF-8, enum indexes in range, nothing is missing or left over),
    but only the wanted ones are kept. With fastavro the per-field reads are generated once per
    schema (:func:`projection_source` shows them) and call fastavro's own reader of each type:
    no record dict, no per-field type dispatch, about twice as fast as decoding the record.
    """
    names = [f["name"] for f in schema["fields"]]
    missing = [f for f in fields if f not in names]
    if missing:
        raise ValueError(f"the schema has no field {missing[0]!r}")
    plain = _without_logical_types(copy.deepcopy(schema))
    full = make_decoder(schema)
    generated = _generated_projection(plain, fields, full)
    if generated is None:
        log.warning("fastavro %s lacks the per-field readers eventfleet uses: decoding whole records "
                    "(about half as fast)", fastavro_version)  # fmt: skip
        return _dict_projection(full, fields)
    return generated


def _dict_projection(decode: Decoder, fields: Sequence[str]) -> Projection:
    """The fields of a decoded record as a tuple (a fastavro without the per-type readers)."""
    if not fields:
        return lambda value: (decode(value), ())[1]
    if len(fields) == 1:
        field = fields[0]
        return lambda value: (decode(value)[field],)
    pick = operator.itemgetter(*fields)
    return lambda value: pick(decode(value))


def projection_source(schema: dict[str, Any], fields: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The Python source of the generated projection, and the names it uses besides fastavro's
    readers: ``S{i}`` the symbols of field i (an enum), ``T{i}`` the parsed type of field i
    (read by fastavro's general ``_read_data``), ``names`` and ``options`` its arguments."""
    named: dict[str, Any] = {}
    parsed: dict[str, Any] = parse_schema(_without_logical_types(copy.deepcopy(schema)), named_schemas=named)  # type: ignore[assignment]
    constants: dict[str, Any] = {"names": {"writer": named, "reader": named}, "options": {}}
    keep = {name: f"v{i}" for i, name in enumerate(fields)}
    lines = ["def decode(value):", "    fo = BytesIO(value)"]
    for i, field in enumerate(parsed["fields"]):
        t = field["type"]
        kind = t.get("type") if isinstance(t, dict) else t
        if kind == "null":
            read = "None"
        elif isinstance(kind, str) and kind in PRIMITIVE_READERS:
            read = f"{PRIMITIVE_READERS[kind]}(fo)"
        elif kind == "enum":
            constants[f"S{i}"] = tuple(t["symbols"])
            read = f"S{i}[read_long(fo)]"  # as fastavro's read_enum: the symbol at that index
        else:  # a union, record, array, map, fixed or named type: fastavro's general reader
            constants[f"T{i}"] = t
            read = f"_read_data(fo, T{i}, names, None, options)"
        name = field["name"]
        label = name if name.isidentifier() else repr(name)  # a comment: never a line break
        lines.append(f"    {keep[name] + ' = ' if name in keep else ''}{read}  # {label}")
    lines += [
        "    if fo.tell() != len(value):",
        '        raise ValueError(f"{len(value) - fo.tell()} bytes left over after the record")',
        f"    return ({', '.join(keep[f] for f in fields)}{',' if len(fields) == 1 else ''})",
    ]
    return "\n".join(lines) + "\n", constants


def _generated_projection(schema: dict[str, Any], fields: Sequence[str], full: Decoder) -> Projection | None:
    """The generated projection on fastavro's per-type readers (``fastavro._read``, its Cython
    module). Used only if they exist and a random record of the schema decodes to the same
    values as with :func:`make_decoder`; else None (the dict projection it is)."""
    try:
        from fastavro import _read
        from fastavro.utils import generate_one
    except ImportError:
        return None
    try:
        source, constants = projection_source(schema, fields)
        namespace: dict[str, Any] = {"BytesIO": BytesIO, **constants}
        for reader in (*PRIMITIVE_READERS.values(), "_read_data"):
            namespace[reader] = getattr(_read, reader)
        exec(compile(source, "<eventfleet projection>", "exec"), namespace)
        decode: Projection = namespace["decode"]
        encode, parsed = make_encoder(schema), parse_schema(schema)
        for _ in range(20):
            probe = encode(generate_one(parsed))
            record = full(probe)
            if repr(decode(probe)) != repr(tuple(record[f] for f in fields)):  # repr: NaN equals NaN
                return None
    except Exception:  # another fastavro version: the dict projection it is
        return None
    return decode


def make_encoder(schema: dict[str, Any]) -> Callable[[Record], bytes]:
    """Return ``encode(record) -> bytes`` (schemaless Avro), for the load generator."""
    parsed = parse_schema(_without_logical_types(copy.deepcopy(schema)))

    def encode(record: Record) -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    return encode
