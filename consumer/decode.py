"""Avro payload to field values, with fastavro (the fast path lives here).

Message values are schemaless Avro (the bytes of one record written with the pipeline's
writer schema, no header), or framed by a schema registry (a header naming the writer schema,
then the body: :class:`FramedDecoder`). Logical types are decoded as their underlying type (a
``timestamp-millis`` stays an int of epoch ms), which is both what windowing needs and faster.
"""

import copy
import json
import logging
import operator
import time
import zlib
from collections.abc import Callable, Hashable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import __version__ as fastavro_version
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from .registry import Registry, UnknownSchema

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


def make_resolving_projection(
    writer: dict[str, Any], reader: dict[str, Any], fields: Sequence[str], start: int = 0
) -> Projection:
    """:func:`make_projection` for values written with another version of the schema: the
    reader's ``fields`` of a record of ``writer``, resolved by Avro's rules (fields matched by name
    or alias, added fields from their default, int -> long -> float -> double, enum symbols with
    the reader's default, unions by branch), the body starting at byte ``start``.

    Raises :class:`ResolutionError` when the writer schema cannot give a wanted field: every
    value of it is the message's fault. Accepts and rejects exactly what fastavro's
    ``schemaless_reader`` with the writer and (the wanted fields of) the reader schema does.
    """
    reader_fields = {f["name"]: f for f in reader["fields"]}
    projected = {k: v for k, v in reader.items() if k != "fields"}
    projected["fields"] = [reader_fields[f] for f in fields]
    plain_writer = _without_logical_types(copy.deepcopy(writer))
    plain_reader = _without_logical_types(projected)
    resolve_fields(parse_schema(copy.deepcopy(plain_writer)), parse_schema(copy.deepcopy(plain_reader)), fields)  # type: ignore[arg-type]
    parsed_writer, parsed_reader = parse_schema(plain_writer), parse_schema(plain_reader)

    def full(value: bytes) -> Record:
        buf = BytesIO(value)
        buf.seek(start)
        record: Record = schemaless_reader(buf, parsed_writer, parsed_reader)  # type: ignore[assignment]
        if buf.tell() != len(value):
            raise ValueError(f"{len(value) - buf.tell()} bytes left over after the record")
        return record

    generated = _generated_projection(plain_writer, fields, full, plain_reader, start)
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


def projection_source(
    schema: dict[str, Any], fields: Sequence[str], reader: dict[str, Any] | None = None, start: int = 0
) -> tuple[str, dict[str, Any]]:
    """The Python source of the generated projection, and the names it uses besides fastavro's
    readers: ``S{i}`` the symbols of field i (an enum), ``T{i}`` the parsed type of field i
    (read by fastavro's general ``_read_data``), ``R{i}`` the reader's type of field i when it
    differs, ``D{i}`` the reader's default of a wanted field the writer lacks, ``names`` and
    ``options`` its arguments.

    ``schema`` is the writer schema. With a ``reader`` schema the wanted ``fields`` are the
    reader's, resolved by Avro's rules (:func:`resolve_fields`): a field the writer has under
    another type is read with fastavro's resolving reader, one it lacks is the reader's default.
    The body starts at byte ``start`` of the value (after a registry's header).
    """
    body, constants = projection_body(schema, fields, reader)
    lines = ["def decode(value):", "    fo = BytesIO(value)"]
    if start:
        lines.append(f"    fo.seek({start})")
    return "\n".join(lines + [f"    {line}" for line in body]) + "\n", constants


def projection_body(
    schema: dict[str, Any], fields: Sequence[str], reader: dict[str, Any] | None = None, tag: str = ""
) -> tuple[list[str], dict[str, Any]]:
    """The lines of :func:`projection_source` after ``fo`` is at the body, unindented; every
    name of theirs (``S1``, ``names``, ...) prefixed with ``tag``, so that the bodies of several
    writer schemas can share one function (:class:`FramedDecoder`)."""
    named: dict[str, Any] = {}
    parsed: dict[str, Any] = parse_schema(_without_logical_types(copy.deepcopy(schema)), named_schemas=named)  # type: ignore[assignment]
    writer_of = {name: name for name in fields}  # wanted field -> the writer's field that holds it
    reader_types: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    reader_named: dict[str, Any] = named
    if reader is not None:
        reader_named = {}
        plain_reader = parse_schema(_without_logical_types(copy.deepcopy(reader)), named_schemas=reader_named)
        writer_of, reader_types, defaults = resolve_fields(parsed, plain_reader, fields)  # type: ignore[arg-type]
    t_ = tag
    constants: dict[str, Any] = {f"{t_}names": {"writer": named, "reader": reader_named}, f"{t_}options": {}}
    keep = {writer_of[name]: f"v{i}" for i, name in enumerate(fields) if name in writer_of}
    lines = []
    for i, name in enumerate(fields):
        if name in defaults:
            constants[f"{t_}D{i}"] = defaults[name]
            lines.append(f"v{i} = {t_}D{i}  # {_label(name)}: the reader's default")
    for i, field in enumerate(parsed["fields"]):
        t = field["type"]
        name = field["name"]
        wanted = next((f for f, w in writer_of.items() if w == name), None)
        kind = t.get("type") if isinstance(t, dict) else t
        if wanted is not None and wanted in reader_types:  # resolved to another type by fastavro
            constants[f"{t_}T{i}"], constants[f"{t_}R{i}"] = t, reader_types[wanted]
            read = f"_read_data(fo, {t_}T{i}, {t_}names, {t_}R{i}, {t_}options)"
        elif kind == "null":
            read = "None"
        elif isinstance(kind, str) and kind in PRIMITIVE_READERS:
            read = f"{PRIMITIVE_READERS[kind]}(fo)"
        elif kind == "enum":
            constants[f"{t_}S{i}"] = tuple(t["symbols"])
            read = f"{t_}S{i}[read_long(fo)]"  # as fastavro's read_enum: the symbol at that index
        else:  # a union, record, array, map, fixed or named type: fastavro's general reader
            constants[f"{t_}T{i}"] = t
            read = f"_read_data(fo, {t_}T{i}, {t_}names, None, {t_}options)"
        lines.append(f"{keep[name] + ' = ' if name in keep else ''}{read}  # {_label(name)}")
    lines += [
        "if fo.tell() != len(value):",
        '    raise ValueError(f"{len(value) - fo.tell()} bytes left over after the record")',
        f"return ({', '.join(f'v{i}' for i in range(len(fields)))}{',' if len(fields) == 1 else ''})",
    ]
    return lines, constants


def _label(name: str) -> str:
    return name if name.isidentifier() else repr(name)  # a comment: never a line break


class ResolutionError(ValueError):
    """A writer schema does not resolve to the fields the pipeline reads (Avro's rules)."""


PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
              ("float", "double"), ("string", "bytes"), ("bytes", "string")}  # fmt: skip


def resolve_fields(
    writer: dict[str, Any], reader: dict[str, Any], fields: Sequence[str]
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """Match the reader's ``fields`` to a (parsed, logical types removed) writer schema by Avro's
    rules: a reader field matches the writer field of its name or of one of its aliases.

    Returns (wanted field -> writer field, wanted field -> reader type where the writer's type
    differs (fastavro's resolving reader promotes it), wanted field -> reader default where the
    writer lacks the field). Raises :class:`ResolutionError` naming the field when the writer
    lacks a field that has no default, or holds it in a type that cannot be promoted.
    """
    by_name = {f["name"]: f for f in writer["fields"]}
    reader_fields = {f["name"]: f for f in reader["fields"]}
    writer_of: dict[str, str] = {}
    reader_types: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for name in fields:
        rf = reader_fields[name]
        wf = next((by_name[n] for n in (name, *rf.get("aliases", ())) if n in by_name), None)
        if wf is None:
            if "default" not in rf:
                raise ResolutionError(
                    f"the writer schema has no field {name!r}, and the reader schema gives it no default"
                )
            defaults[name] = rf["default"]
            continue
        writer_of[name] = wf["name"]
        if wf["type"] != rf["type"]:
            if not _resolvable(wf["type"], rf["type"]):
                raise ResolutionError(
                    f"field {name!r} is {_type_name(wf['type'])} in the writer schema, which cannot be read as "
                    f"{_type_name(rf['type'])}"
                )
            reader_types[name] = rf["type"]
    return writer_of, reader_types, defaults


def _type_name(t: Any) -> str:
    if isinstance(t, list):
        return "[" + ", ".join(_type_name(b) for b in t) + "]"
    if isinstance(t, dict):
        return str(t.get("name") or t.get("type"))
    return str(t)


def _resolvable(w: Any, r: Any) -> bool:
    """Whether some value of writer type ``w`` can be read as reader type ``r`` (for a union,
    the branch a value takes decides; a value of a branch that does not resolve is rejected)."""
    if isinstance(w, list):
        return any(_resolvable(b, r) for b in w)
    if isinstance(r, list):
        return any(_resolvable(w, b) for b in r)
    wk = w.get("type") if isinstance(w, dict) else w
    rk = r.get("type") if isinstance(r, dict) else r
    if wk == rk and isinstance(w, dict) and isinstance(r, dict) and wk in ("enum", "fixed", "record"):
        return str(w.get("name", "")).split(".")[-1] == str(r.get("name", "")).split(".")[-1] or w.get("name") in r.get(
            "aliases", ()
        )
    return wk == rk or (wk, rk) in PROMOTIONS


def _generated_projection(
    schema: dict[str, Any],
    fields: Sequence[str],
    full: Decoder,
    reader: dict[str, Any] | None = None,
    start: int = 0,
) -> Projection | None:
    """The generated projection on fastavro's per-type readers (``fastavro._read``, its Cython
    module). Used only if they exist and random records of the schema decode to the same
    values as with the ``full`` decoder; else None (the dict projection it is)."""
    try:
        from fastavro import _read
        from fastavro.utils import generate_one
    except ImportError:
        return None
    try:
        source, constants = projection_source(schema, fields, reader, start)
        namespace: dict[str, Any] = {"BytesIO": BytesIO, **constants}
        for name in (*PRIMITIVE_READERS.values(), "_read_data"):
            namespace[name] = getattr(_read, name)
        exec(compile(source, "<eventfleet projection>", "exec"), namespace)
        decode: Projection = namespace["decode"]
        encode, parsed = make_encoder(schema), parse_schema(_without_logical_types(copy.deepcopy(schema)))
        header = bytes(start)
        for _ in range(20):
            probe = header + encode(generate_one(parsed))
            try:
                expected: Any = full(probe)
            except Exception as e:  # e.g. a union branch that does not resolve: both must refuse it
                expected = type(e)
            try:
                got: Any = decode(probe)
            except Exception as e:
                got = type(e)
            if not isinstance(expected, type):
                expected = tuple(expected[f] for f in fields)
            if repr(got) != repr(expected):  # repr: NaN equals NaN
                return None
    except ResolutionError:
        raise
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


NEGATIVE_CACHE_S = 60.0  # an unknown schema id is asked again after this long (it may be registered since)


INLINE_SCHEMAS_MAX = 16  # writer schemas decoded in one generated function; more go by a dict look-up


class FramedDecoder:
    """``decode(value) -> tuple`` for values framed by a schema registry (registry.py).

    The header names the writer schema, fetched once per reference and resolved against the
    pipeline's reader schema into a projection of its own (:func:`make_resolving_projection`).
    The projections of the writer schemas seen so far are generated into one function that
    reads the header and goes straight to that schema's reads, so that a framed value costs one
    read and one comparison more than a schemaless one; ``decode`` is replaced by a new function
    when a new writer schema appears (read it again per batch). A header not in it goes to
    :meth:`_miss`.

    A value the registry cannot give a schema for raises :class:`registry.BadFrame`,
    :class:`registry.UnknownSchema` or :class:`ResolutionError` (the message's fault: a dead
    letter), or :class:`registry.RegistryUnavailable` (not its fault: the worker pauses).
    """

    def __init__(self, reader: dict[str, Any], fields: Sequence[str], registry: Registry) -> None:
        self.reader = reader
        self.fields = tuple(fields)
        self.registry = registry
        self.size = registry.header_size
        self.by_header: dict[bytes, Projection] = {}  # a value's header -> its projection
        self.by_ref: dict[tuple[Hashable, bool], Projection] = {}  # (reference, compressed) -> projection
        self.writers: dict[Hashable, dict[str, Any]] = {}  # reference -> writer schema, fetched once
        self.refused: dict[Hashable, tuple[float, Exception]] = {}  # reference -> (when, why)
        self.inline: list[tuple[bytes, dict[str, Any]]] = []  # (header, writer schema) in ``decode``
        self.decode: Projection = self._miss

    def _miss(self, value: bytes) -> tuple[Any, ...]:
        header = value[: self.size]
        project = self.by_header.get(header)
        if project is None:
            ref, compressed = self.registry.parse_header(header)
            project = self.projection(ref, compressed)
            self.by_header[header] = project
            if not compressed and _is_generated(project) and len(self.inline) < INLINE_SCHEMAS_MAX:
                self.inline.append((header, self.writers[ref]))
                self.decode = self._generate()
        return project(value)

    def _generate(self) -> Projection:
        """One function for every inlined writer schema: read the header, run that schema's reads."""
        from fastavro import _read

        namespace: dict[str, Any] = {"BytesIO": BytesIO, "miss": self._miss}
        for name in (*PRIMITIVE_READERS.values(), "_read_data"):
            namespace[name] = getattr(_read, name)
        lines = ["def decode(value):", "    fo = BytesIO(value)", f"    header = fo.read({self.size})"]
        for n, (header, writer) in enumerate(self.inline):
            body, constants = projection_body(writer, self.fields, self.reader, tag=f"w{n}_")
            namespace.update(constants)
            namespace[f"H{n}"] = header
            lines.append(f"    if header == H{n}:")
            lines += [f"        {line}" for line in body]
        lines.append("    return miss(value)")
        exec(compile("\n".join(lines) + "\n", "<eventfleet framed projection>", "exec"), namespace)
        decode: Projection = namespace["decode"]
        return decode

    def projection(self, ref: Hashable, compressed: bool = False) -> Projection:
        """The projection for values of the writer schema ``ref`` names (fetched now unless known);
        a ``compressed`` body (Glue's zlib) is inflated first."""
        key = (ref, compressed)
        project = self.by_ref.get(key)
        if project is not None:
            return project
        refused = self.refused.get(ref)
        if refused is not None and time.monotonic() - refused[0] < NEGATIVE_CACHE_S:
            raise refused[1]
        try:
            writer = self.writers.get(ref) or self.registry.writer_schema(ref)  # RegistryUnavailable: not cached
            self.writers[ref] = writer
            start = 0 if compressed else self.size
            project = make_resolving_projection(writer, self.reader, self.fields, start)
        except (UnknownSchema, ResolutionError) as e:
            self.refused[ref] = (time.monotonic(), e)
            raise
        except ValueError as e:  # not a valid Avro record schema
            error = ResolutionError(f"writer schema {ref}: {e}")
            self.refused[ref] = (time.monotonic(), error)
            raise error from None
        log.info("writer schema %s resolved against the pipeline's schema", ref)
        if compressed:
            inner, size = project, self.size
            project = lambda value: inner(zlib.decompress(value[size:]))  # noqa: E731
        self.by_ref[key] = project
        return project


def _is_generated(project: Projection) -> bool:
    code = getattr(project, "__code__", None)
    return code is not None and code.co_filename == "<eventfleet projection>"


def make_event_decoder(reader: dict[str, Any], fields: Sequence[str], registry: Registry | None = None) -> Projection:
    """What the worker decodes with: the projection of schemaless values of ``reader``, or, with
    a registry, of framed values of any writer schema that resolves to ``fields``."""
    if registry is None:
        return make_projection(reader, fields)
    framed = FramedDecoder(reader, fields, registry)
    return lambda value: framed.decode(value)  # framed.decode changes as writer schemas appear
