"""A line of a file -> one Avro record of the pipeline's schema (and its key), or a bad line.

Two formats (docs/ingest.md): ``jsonl``, a JSON object per line, and ``regex``, the named groups
of a pattern. Either way the values are coerced by the schema's field types:

- ``int``/``long``: whole numbers within the type's range (a regex group: decimal text);
- ``float``/``double``: numbers (a whole number is fine);
- ``boolean``: true/false; an enum: one of its symbols; ``bytes``: base64 text;
- ``timestamp-millis``/``-micros``: epoch ms (µs), or an ISO-8601 time with ``Z`` or an offset
  (``2026-12-01T13:00:00.123Z``, ``...+01:00``); a regex group may also hold an access log's
  ``10/Oct/2026:13:55:36 +0200``;
- a missing field: its default, else null when it is nullable, else the line is bad.

A JSON line is parsed and checked in one step by msgspec against a struct generated from the
schema; the record is then written by an Avro encoder generated from the schema as well (Python
source, :func:`encoder_source`): no dict per line, no per-field type dispatch. Fields whose types
are not plain values (records, arrays, maps, unions of several types) are checked and written by
fastavro instead, which is slower but general.
"""

import copy
import datetime
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from io import BytesIO
from typing import Annotated, Any, Literal

import msgspec
from fastavro import parse_schema, schemaless_writer

Line = tuple[bytes, bytes | None]  # (Avro value, key or None)

INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
TIME_UNITS = {
    "timestamp-millis": datetime.timedelta(milliseconds=1),
    "timestamp-micros": datetime.timedelta(microseconds=1),
}
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


class BadLine(ValueError):
    """A line that does not parse or does not fit the schema; the message says why."""


@dataclass(frozen=True)
class Field:
    """One top-level field of the schema as the converter sees it."""

    name: str
    kind: str  # boolean, int, long, float, double, bytes, string, enum, timestamp-millis, -micros, complex
    nullable: bool = False
    null_first: bool = True  # the union's branch order: ["null", T] or [T, "null"]
    symbols: tuple[str, ...] = ()
    default: Any = msgspec.NODEFAULT


def schema_fields(schema: Mapping[str, Any]) -> list[Field]:
    """The record's fields, named types resolved (a field may name an enum defined earlier)."""
    named: dict[str, Any] = {}
    namespace = schema.get("namespace", "")
    out = []
    for f in schema["fields"]:
        t = f["type"]
        nullable, null_first = False, True
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            if len(t) == 2 and len(branches) == 1:
                nullable, null_first, t = True, t[0] == "null", branches[0]
            else:
                t = {"type": "complex"}
        t = _resolve(t, named, namespace)
        kind = t.get("type") if isinstance(t, dict) else t
        if isinstance(t, dict) and t.get("logicalType") in TIME_UNITS and kind == "long":
            kind = t["logicalType"]
        elif kind not in PRIMITIVES[1:] and kind != "enum":
            kind = "complex"
        symbols = tuple(t["symbols"]) if kind == "enum" else ()
        default = f.get("default", None if nullable else msgspec.NODEFAULT)
        out.append(Field(f["name"], str(kind), nullable, null_first, symbols, default))
    return out


def _resolve(t: Any, named: dict[str, Any], namespace: str) -> Any:
    """A type by name -> its definition; records the names this type defines."""
    if isinstance(t, str) and t not in PRIMITIVES:
        return named.get(t) or named.get(f"{namespace}.{t}") or {"type": "complex"}
    if isinstance(t, dict) and t.get("type") in ("enum", "record", "fixed") and "name" in t:
        name = t["name"]
        named[name] = t
        named[f"{t.get('namespace', namespace)}.{name}".lstrip(".")] = t
    return t


# -- parsing: the generated struct ---------------------------------------------------------


def _struct_type(f: Field) -> Any:
    if f.kind in ("int", "long"):
        low, high = INT_RANGE[f.kind]
        t: Any = Annotated[int, msgspec.Meta(ge=low, le=high)]
    elif f.kind in TIME_UNITS:
        low, high = INT_RANGE["long"]
        t = Annotated[int, msgspec.Meta(ge=low, le=high)] | Annotated[datetime.datetime, msgspec.Meta(tz=True)]
    elif f.kind in ("float", "double"):
        t = float
    elif f.kind == "boolean":
        t = bool
    elif f.kind == "string":
        t = str
    elif f.kind == "bytes":
        t = bytes  # base64 text in JSON
    elif f.kind == "enum":
        t = Literal[f.symbols]
    else:
        t = Any
    return t | None if f.nullable else t


def make_struct(fields: Sequence[Field]) -> type[msgspec.Struct]:
    """A msgspec struct with attribute ``f{i}`` for field i, read from the JSON key of its name."""
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for i, f in enumerate(fields):
        if f.default is msgspec.NODEFAULT:
            spec.append((f"f{i}", _struct_type(f)))
        else:
            default = f.default
            if f.kind == "bytes" and isinstance(default, str):
                default = default.encode("latin-1")  # Avro's JSON default of bytes: code points 0-255
            if isinstance(default, list | dict):
                spec.append((f"f{i}", _struct_type(f), msgspec.field(default_factory=partial(copy.deepcopy, default))))
            else:
                spec.append((f"f{i}", _struct_type(f), default))
    # required fields first (a struct cannot have a field without default after one with)
    spec.sort(key=lambda s: len(s) == 3)
    rename = {f"f{i}": f.name for i, f in enumerate(fields)}
    return msgspec.defstruct("Line", spec, rename=rename, kw_only=True)


# -- encoding: the generated writer ----------------------------------------------------------

_BYTE = [bytes((i,)) for i in range(128)]
_ZIGZAG_SMALL = [bytes((2 * n,)) for n in range(64)]  # zigzag varint of 0..63 (string lengths)


def varint(z: int) -> bytes:
    """Avro's variable-length encoding of a non-negative (already zigzagged) integer."""
    if z < 0x80:
        return _BYTE[z]
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7))
    out = bytearray()
    while z > 0x7F:
        out.append(z & 0x7F | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _time_value(v: Any, unit: datetime.timedelta) -> int:
    if v.__class__ is int:
        return int(v)
    return int((v - EPOCH) // unit)  # exact: no float in between


def encoder_source(fields: Sequence[Field], key: str | None) -> tuple[str, dict[str, Any]]:
    """Python source of ``record(r) -> (value, key)`` for a struct of :func:`make_struct`, and
    the names it uses. Every branch writes what fastavro's ``schemaless_writer`` would."""
    names: dict[str, Any] = {"varint": varint, "B": _BYTE, "Z": _ZIGZAG_SMALL, "f32": struct.Struct("<f").pack,
                             "f64": struct.Struct("<d").pack, "tv": _time_value}  # fmt: skip
    lines = ["def record(r):", "    out = []", "    a = out.append"]
    for i, f in enumerate(fields):
        pad = "    "
        lines.append(f"    v = r.f{i}")
        if f.nullable:
            null_index, value_index = (0, 1) if f.null_first else (1, 0)
            lines += [
                "    if v is None:",
                f"        a(B[{2 * null_index}])",
                "    else:",
                f"        a(B[{2 * value_index}])",
            ]
            pad = "        "
        lines += [pad + line for line in _write(i, f, names)]
    lines.append("    value = b''.join(out)")
    if key is None:
        lines.append("    return value, None")
    else:
        i, f = next((n, f) for n, f in enumerate(fields) if f.name == key)
        if f.kind in ("string", "enum") and not f.nullable:
            lines.append(f"    return value, r.f{i}.encode()")
        else:
            lines.append(f"    return value, key_text(r.f{i})")
            names["key_text"] = key_text
    return "\n".join(lines) + "\n", names


def _write(i: int, f: Field, names: dict[str, Any]) -> list[str]:
    """The lines that append the encoding of ``v``, a value of field ``f``."""
    if f.kind in ("int", "long"):
        return ["z = (v << 1) ^ (v >> 63)", "a(B[z] if z < 128 else varint(z))"]
    if f.kind in TIME_UNITS:
        names[f"U{i}"] = TIME_UNITS[f.kind]
        return [f"v = tv(v, U{i})", "z = (v << 1) ^ (v >> 63)", "a(B[z] if z < 128 else varint(z))"]
    if f.kind in ("string", "bytes"):
        encoded = "b = v.encode()" if f.kind == "string" else "b = v"
        return [encoded, "n = len(b)", "a(Z[n] if n < 64 else varint(n << 1))", "a(b)"]
    if f.kind == "boolean":
        return ["a(B[1] if v else B[0])"]
    if f.kind == "float":
        return ["a(f32(v))"]
    if f.kind == "double":
        return ["a(f64(v))"]
    if f.kind == "enum":
        names[f"S{i}"] = {s: varint(2 * n) for n, s in enumerate(f.symbols)}
        return [f"a(S{i}[v])"]
    raise AssertionError(f"no generated writer for {f.kind}")  # complex fields go through fastavro


def key_text(v: Any) -> bytes | None:
    """A key field's value as UTF-8 text: strings and symbols as they are, numbers in decimal,
    booleans as true/false, times as epoch ms (µs), null as no key."""
    if v is None:
        return None
    if v.__class__ is str:
        return str(v).encode()
    if v.__class__ is bool:
        return b"true" if v else b"false"
    if isinstance(v, datetime.datetime):
        return str((v - EPOCH) // TIME_UNITS["timestamp-millis"]).encode()
    if isinstance(v, bytes):
        return v
    return str(v).encode()


def compile_record(fields: Sequence[Field], key: str | None, schema: Mapping[str, Any]) -> Callable[[Any], Line]:
    """``record(r) -> (value, key)`` for a parsed struct: generated, or fastavro's writer when a
    field is not a plain value."""
    if any(f.kind == "complex" for f in fields):
        return _fastavro_record(fields, key, schema)
    source, names = encoder_source(fields, key)
    exec(compile(source, "<eventfleet ingest encoder>", "exec"), names)
    record: Callable[[Any], Line] = names["record"]
    return record


def _fastavro_record(fields: Sequence[Field], key: str | None, schema: Mapping[str, Any]) -> Callable[[Any], Line]:
    parsed = parse_schema(copy.deepcopy(dict(schema)))  # logical types kept: datetimes are written as such
    attrs = [(f"f{i}", f.name) for i, f in enumerate(fields)]
    key_attr = next((f"f{i}" for i, f in enumerate(fields) if f.name == key), None)

    def record(r: Any) -> Line:
        buf = BytesIO()
        schemaless_writer(buf, parsed, {name: getattr(r, attr) for attr, name in attrs})
        return buf.getvalue(), key_text(getattr(r, key_attr)) if key_attr else None

    return record


# -- the converters ------------------------------------------------------------------------------

_PARSE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError)
_WRITE_ERRORS = (ValueError, TypeError, OverflowError, struct.error, KeyError)


class Converter:
    """``convert(line) -> (value, key)`` for one line (without its newline); raises BadLine."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        fmt: str = "jsonl",
        pattern: str | None = None,
        key: str | None = None,
        frame: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.fields = schema_fields(schema)
        self.struct = make_struct(self.fields)
        record = compile_record(self.fields, key, schema)
        if frame is not None:  # values framed for a schema registry: its header, then the body
            body = record

            def record(r: Any) -> Line:
                value, k = body(r)
                return frame(value), k

        self.record = record
        self.decode = msgspec.json.Decoder(self.struct).decode
        self.pattern = re.compile(pattern) if pattern else None
        self.times = [f.name for f in self.fields if f.kind in TIME_UNITS]
        self.convert = self._json if fmt == "jsonl" else self._regex

    def _json(self, line: bytes) -> Line:
        try:
            r = self.decode(line)
        except _PARSE_ERRORS as e:
            raise BadLine(str(e)) from None
        try:
            return self.record(r)
        except _WRITE_ERRORS as e:
            raise BadLine(f"cannot be written in the schema: {e}") from None

    def _regex(self, line: bytes) -> Line:
        assert self.pattern is not None
        try:
            text = line.decode()
        except UnicodeDecodeError as e:
            raise BadLine(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
        m = self.pattern.match(text.removesuffix("\r"))
        if m is None:
            raise BadLine("does not match [ingest] pattern")
        values = {k: v for k, v in m.groupdict().items() if v is not None}
        for name in self.times:
            if name in values:
                values[name] = access_log_time(values[name])
        try:
            r = msgspec.convert(values, self.struct, strict=False)
        except _PARSE_ERRORS as e:
            raise BadLine(str(e)) from None
        try:
            return self.record(r)
        except _WRITE_ERRORS as e:
            raise BadLine(f"cannot be written in the schema: {e}") from None


_CLF_TIME = re.compile(
    r"^(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? ([+-])(\d{2})(\d{2})$"
)
_MONTHS = {
    m: n for n, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


@lru_cache(maxsize=4096)  # an access log repeats each second's text many times
def access_log_time(text: str) -> str | datetime.datetime:
    """``10/Oct/2026:13:55:36 +0200`` (common and combined log format) -> that time; any other
    text is returned as it is (epoch digits and ISO-8601 are coerced by the struct)."""
    m = _CLF_TIME.match(text)
    if m is None or m.group(2) not in _MONTHS:
        return text
    day, month, year, hour, minute, second, fraction, sign, oh, om = m.groups()
    offset = datetime.timedelta(hours=int(oh), minutes=int(om)) * (1 if sign == "+" else -1)
    micros = int((fraction or "0").ljust(6, "0"))
    zone = datetime.timezone(offset)
    return datetime.datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), micros, zone)
