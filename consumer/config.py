"""The pipeline file (TOML) to frozen dataclasses. Every mistake names the key and the fix.

Relative paths in the file (``schema.path``, ``sink.path``, ``kafka.ca_file``) are relative to the
file itself. Where no file can be mounted (a container on ECS), ``--config env:NAME`` reads the
pipeline from the environment variable NAME instead, and ``schema.path = "env:NAME"`` the schema;
relative paths are then relative to the working directory.
"""

import hashlib
import json
import logging
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import auth, kafkalog
from .aggregate import SKETCH_KINDS, Metric, MetricError, estimate_columns, sketch_column
from .decode import GROUPABLE, NUMERIC, check_schema, field_types, load_schema
from .errors import ConfigError
from .registry import RegistrySettings, RegistryUnavailable, UnknownSchema, connect
from .window import parse_duration_ms

log = logging.getLogger(__name__)

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSTANCE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")

# librdkafka settings that carry eventfleet's guarantees: the user may not override them.
MANAGED_KAFKA_KEYS = {
    "bootstrap.servers": "set [kafka] bootstrap_servers instead",
    "group.id": "set [kafka] group_id instead",
    "enable.auto.commit": "eventfleet commits after each sink transaction; remove the key",
    "enable.auto.offset.store": "eventfleet stores offsets itself; remove the key",
    "partition.assignment.strategy": "eventfleet needs cooperative-sticky; remove the key",
    "group.instance.id": "eventfleet run gives each worker slot its own from [fleet] instance_id; remove the key",
}
ENV_SOURCE = "env:"  # --config env:NAME, schema.path = "env:NAME": the content of variable NAME
RESERVED_COLUMNS = ("window_start", "window_end")
# Producer settings the kafka sink's exactly-once transactions depend on: the user may not override them.
MANAGED_PRODUCER_KEYS = {
    "bootstrap.servers": "the output topic must be on the [kafka] cluster (offsets commit in the same transaction)",
    "transactional.id": "eventfleet gives every worker process its own; remove the key",
    "enable.idempotence": "transactions need it on; remove the key",
    "acks": "transactions need acks=all; remove the key",
}


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    auth: str = "none"  # one of auth.AUTH_MODES
    region: str | None = None  # msk-iam: the cluster's AWS region
    security: Mapping[str, Any] = field(default_factory=dict, repr=False)  # from auth and tls; may hold a password

    def client_settings(self) -> dict[str, Any]:
        """Settings every Kafka client of the pipeline needs (producers and admin clients too):
        the bootstrap servers, the security.*, sasl.*, ssl.* keys of [kafka.config], and what
        ``auth``/``tls`` stand for, with the MSK IAM token callback; and the callbacks that route
        librdkafka's logs and errors through logging (:mod:`consumer.kafkalog`)."""
        security = {k: v for k, v in self.config.items() if k.startswith(("security.", "sasl.", "ssl."))}
        settings = {"bootstrap.servers": self.bootstrap_servers, **security, **self.security}
        settings.update(kafkalog.client_hooks())  # librdkafka's lines through logging, brokers lost and back
        if self.auth == "msk-iam":
            settings["oauth_cb"] = auth.MskIamToken(self.region or "")
        return settings


@dataclass(frozen=True)
class WindowSettings:
    size_ms: int
    grace_ms: int
    time_field: str | None  # None: the Kafka message timestamp
    step_ms: int = 0  # hopping windows start every step_ms (it divides size_ms); 0 given: size_ms, tumbling

    def __post_init__(self) -> None:
        if not self.step_ms:
            object.__setattr__(self, "step_ms", self.size_ms)

    @property
    def hopping(self) -> bool:
        """Windows overlap: each event belongs to ``size_ms / step_ms`` of them."""
        return self.step_ms != self.size_ms


@dataclass(frozen=True)
class AggregateSettings:
    group_by: tuple[str, ...]
    metrics: tuple[Metric, ...]


@dataclass(frozen=True)
class SinkSettings:
    type: str
    path: Path | None  # sqlite: the database file
    table: str  # sqlite, postgres
    dsn: str | None = None  # postgres: libpq connection string; None: the PG* environment variables
    topic: str = ""  # kafka: the output topic
    config: Mapping[str, Any] = field(default_factory=dict)  # kafka: librdkafka producer settings
    registry: bool = False  # kafka: register the output schemas in [schema] registry and frame records


@dataclass(frozen=True)
class FleetSettings:
    watchdog_timeout_s: float = 60.0  # a worker silent this long is killed and restarted
    shutdown_grace_s: float = 30.0  # after SIGTERM, workers still running this long are killed
    max_rss_bytes: int | None = None  # a worker above this flushes, exits and is replaced
    # Static membership (KIP-345): worker slot i of `eventfleet run` joins as group.instance.id
    # "<instance_id>-<i>", so a restarted worker gets its partitions back without a rebalance.
    # None: $EVENTFLEET_INSTANCE_ID, else the host name.
    instance_id: str | None = None
    static_membership: bool = True  # off: a restarted worker waits for its old session to expire


@dataclass(frozen=True)
class DlqSettings:
    enabled: bool = True
    topic: str | None = None  # None: "<source topic>.dlq"
    max_invalid_ratio: float | None = None  # stop when more than this share of ...
    ratio_window: int = 1000  # ... the last this many messages is invalid
    max_consecutive: int | None = None  # stop after this many invalid messages in a row (a partition)


INGEST_FORMATS = ("jsonl", "regex")
INGEST_STARTS = ("beginning", "end")


@dataclass(frozen=True)
class IngestSettings:
    """[ingest]: what ``eventfleet tail`` follows and where it writes (``eventfleet run`` ignores it)."""

    paths: tuple[str, ...]  # globs, absolute (relative ones are relative to the pipeline file)
    topic: str
    id: str  # the tailer's name: its transactional.id and the prefix of its position keys
    format: str = "jsonl"  # one of INGEST_FORMATS
    pattern: str | None = None  # format "regex": named groups -> fields
    key: str | None = None  # the field whose value (as UTF-8 text) keys each record
    start: str = "beginning"  # one of INGEST_STARTS: where files present at the very first start begin
    positions_topic: str = ""  # compacted; "" -> "<topic>.tail-positions"
    commit_interval_ms: int = 1000  # one Kafka transaction at most this often
    rotate_wait_ms: int = 5000  # a file renamed away or deleted stays open this long after its last growth
    max_line_bytes: int = 512 << 10  # longer lines go to the dead letters (their first max_line_bytes)
    metrics_port: int = 9401
    config: Mapping[str, Any] = field(default_factory=dict)  # librdkafka producer settings


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline: everything a worker needs, nothing left to check later."""

    source: Path
    kafka: KafkaSettings
    schema_path: Path | None  # None: the reader schema is the registry subject's latest version
    schema: Mapping[str, Any]
    field_types: Mapping[str, str]
    window: WindowSettings
    aggregate: AggregateSettings
    sink: SinkSettings
    flush_interval_ms: int
    metrics_port: int = 9400
    fleet: FleetSettings = field(default_factory=FleetSettings)
    dlq: DlqSettings = field(default_factory=DlqSettings)
    registry: RegistrySettings | None = None  # values framed by a schema registry; None: schemaless
    ingest: IngestSettings | None = None  # [ingest]: for eventfleet tail

    def event_fields(self) -> tuple[str, ...]:
        """The event fields the worker reads, in the order its decoder returns them: the time
        field (if any) first, then the group-by fields and the metrics' fields."""
        names = [self.window.time_field] if self.window.time_field else []
        names += [*self.aggregate.group_by, *(m.field for m in self.aggregate.metrics if m.field)]
        return tuple(dict.fromkeys(names))

    def column_types(self) -> dict[str, str]:
        """Output column -> Avro type name, in table order (window, group-by, metrics)."""
        cols = {"window_start": "long", "window_end": "long"}
        for g in self.aggregate.group_by:
            cols[g] = self.field_types[g]
        for m in self.aggregate.metrics:
            if m.kind == "distinct":
                cols[m.name] = "long"
            elif m.kind == "quantiles":
                cols |= dict.fromkeys(estimate_columns(m), "double")
            else:
                cols[m.name] = "long" if m.kind == "count" else self.field_types[m.field or ""]
            if m.kind in SKETCH_KINDS:
                cols[sketch_column(m)] = "bytes"  # the serialized sketch (aggregate.sketch_to_bytes)
        return cols


def load(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file (or ``env:NAME``); raises ConfigError on the first mistake."""
    if str(path).startswith(ENV_SOURCE):
        text = _env_source("--config", str(path), "the pipeline TOML")
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(path), f"not valid TOML ({e})", "correct the syntax at that line") from None
        # its parent is ".": relative paths are from the working directory
        return parse(expand_env(doc, os.environ), Path(str(path)))
    path = Path(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            "--config",
            f"file {str(path)!r} does not exist",
            "pass the path of a pipeline .toml file",
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML ({e})", "correct the syntax at that line") from None
    return parse(expand_env(doc, os.environ), path)


def parse(doc: Mapping[str, Any], path: Path) -> Pipeline:
    """Validate an already-read TOML document (``path`` anchors relative paths)."""
    base = path.parent
    kafka = _kafka(_table(doc, "kafka"), base)
    schema_path, schema, types, registry = _schema(_table(doc, "schema"), base, kafka.topics)
    window = _window(_table(doc, "window"), types)
    aggregate = _aggregate(_table(doc, "aggregate"), types)
    sink = _sink(_table(doc, "sink"), base)
    flush = _table(doc, "flush", required=False)
    interval = _duration(flush, "flush.interval", "interval", default="5s")
    if interval <= 0:
        raise ConfigError("flush.interval", "must be more than zero", 'write e.g. "5s"')
    metrics_port = _port(_table(doc, "metrics", required=False))
    fleet = _fleet(_table(doc, "fleet", required=False))
    dlq = _dlq(_table(doc, "dlq", required=False))
    ingest = _ingest(doc["ingest"], base, path, kafka, schema, types) if "ingest" in doc else None
    known = {"kafka", "schema", "window", "aggregate", "sink", "flush", "metrics", "fleet", "dlq", "ingest"}
    for key in doc:
        if key not in known:
            raise ConfigError(key, "unknown section", f"use only [{'], ['.join(sorted(known))}]")
    pipeline = Pipeline(
        path, kafka, schema_path, schema, types, window, aggregate, sink, interval, metrics_port, fleet, dlq, registry,
        ingest,
    )  # fmt: skip
    from .sinks import sink_type

    sink_type(sink.type).check_pipeline(pipeline)  # what the sink needs from the other sections
    return pipeline


INGEST_KEYS = ("paths", "format", "pattern", "topic", "key", "start", "id", "positions_topic", "commit_interval",
               "rotate_wait", "max_line_bytes", "metrics_port", "config")  # fmt: skip
_TAILER_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def _ingest(
    value: Any, base: Path, path: Path, kafka: KafkaSettings, schema: Mapping[str, Any], types: Mapping[str, str]
) -> IngestSettings:
    """[ingest], for ``eventfleet tail``: the files, their format, the topic (docs/ingest.md)."""
    t = _table({"ingest": value}, "ingest")
    for name in t:
        if name not in INGEST_KEYS:
            raise ConfigError(f"ingest.{name}", "unknown key", f"use {', '.join(INGEST_KEYS)}")
    paths = t.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise ConfigError("ingest.paths", f"must be a non-empty list of file globs, got {paths!r}",
                          'write paths = ["/var/log/app/*.log"]')  # fmt: skip
    globs = tuple(os.path.abspath(p if os.path.isabs(p) else base / p) for p in paths)
    fmt = _string(t, "ingest.format", "format", default="jsonl")
    if fmt not in INGEST_FORMATS:
        raise ConfigError("ingest.format", f"unknown format {fmt!r}", 'use "jsonl" or "regex" (with pattern)')
    pattern = _ingest_pattern(t, fmt, schema, types)
    topic = _string(t, "ingest.topic", "topic", default=kafka.topics[0])
    key = t.get("key")
    if key is not None:
        if not isinstance(key, str) or key not in types:
            raise ConfigError("ingest.key", f"{key!r} is not a field of the schema", f"use one of: {', '.join(types)}")
        if types[key] == "complex":
            raise ConfigError("ingest.key", f"field {key!r} is not a plain value", "key by a string, number or enum")
    start = _string(t, "ingest.start", "start", default="beginning")
    if start not in INGEST_STARTS:
        raise ConfigError("ingest.start", f"must be \"beginning\" or \"end\", got {start!r}",
                          'write start = "beginning" (or "end": new lines only)')  # fmt: skip
    default_id = f"{socket.gethostname()}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    tailer = _string(t, "ingest.id", "id", default=default_id)
    if not _TAILER_ID.match(tailer):
        raise ConfigError("ingest.id", f"{tailer!r} is not a plain name",
                          "use letters, digits, '.', '_' and '-' (one stable name per tailer)")  # fmt: skip
    positions = _string(t, "ingest.positions_topic", "positions_topic", default=f"{topic}.tail-positions")
    if positions in (topic, *kafka.topics):
        raise ConfigError("ingest.positions_topic", f"{positions!r} is a topic of events",
                          "name a topic only the tailers write (the default is <topic>.tail-positions)")  # fmt: skip
    commit = _duration(t, "ingest.commit_interval", "commit_interval", default="1s")
    rotate_wait = _duration(t, "ingest.rotate_wait", "rotate_wait", default="5s")
    if commit <= 0:
        raise ConfigError("ingest.commit_interval", "must be more than zero", 'write e.g. commit_interval = "1s"')
    match = _SIZE.match(str(t.get("max_line_bytes", "512KiB")))  # below message.max.bytes (1,000,000 by default)
    max_line = int(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else 0
    if max_line < 1:
        raise ConfigError("ingest.max_line_bytes", f"{t.get('max_line_bytes')!r} is not a size of at least 1 byte",
                          'write e.g. max_line_bytes = "512KiB"')  # fmt: skip
    port = t.get("metrics_port", 9401)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError("ingest.metrics_port", f"must be a port number 0-65535, got {port!r}",
                          "write metrics_port = 9401 (0 disables)")  # fmt: skip
    extra = t.get("config", {})
    if not isinstance(extra, Mapping):
        raise ConfigError("ingest.config", "must be a table of librdkafka producer settings",
                          'write [ingest.config] then "key" = value lines')  # fmt: skip
    for name, v in extra.items():
        if name in MANAGED_PRODUCER_KEYS:
            fix = MANAGED_PRODUCER_KEYS[name].replace(
                "every worker process its own", "each tailer its own ([ingest] id)"
            )
            raise ConfigError(f"ingest.config.{name}", "is managed by eventfleet", fix)
        if not isinstance(v, str | int | float | bool):
            raise ConfigError(f"ingest.config.{name}", f"must be a string, number or boolean, got {v!r}",
                              "write a scalar value")  # fmt: skip
    return IngestSettings(globs, topic, tailer, fmt, pattern, key, start, positions, commit, rotate_wait, max_line,
                          port, dict(extra))  # fmt: skip


def _ingest_pattern(t: Mapping[str, Any], fmt: str, schema: Mapping[str, Any], types: Mapping[str, str]) -> str | None:
    """format = "regex": a pattern whose named groups are schema fields, one for every field
    that has no default and is not nullable."""
    if fmt != "regex":
        if "pattern" in t:
            raise ConfigError("ingest.pattern", 'is used with format = "regex" only', "remove it, or set the format")
        return None
    pattern = _string(t, "ingest.pattern", "pattern")
    try:
        groups = set(re.compile(pattern).groupindex)
    except re.error as e:
        raise ConfigError("ingest.pattern", f"not a valid regular expression ({e})", "correct the pattern") from None
    for name in sorted(groups - set(types)):
        raise ConfigError("ingest.pattern", f"group {name!r} is not a field of the schema",
                          f"name the groups after fields: {', '.join(types)}")  # fmt: skip
    for f in schema["fields"]:
        if f["name"] not in groups and "default" not in f and types[f["name"]] != "nullable":
            raise ConfigError("ingest.pattern", f"has no group (?P<{f['name']}>...) for the required field "
                              f"{f['name']!r}", "add the group, or give the field a default in the schema")  # fmt: skip
    return pattern


def _dlq(t: Mapping[str, Any]) -> DlqSettings:
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("dlq.enabled", f"must be true or false, got {enabled!r}", "write enabled = true")
    topic = _string(t, "dlq.topic", "topic") if "topic" in t else None
    ratio = t.get("max_invalid_ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1):
        raise ConfigError(
            "dlq.max_invalid_ratio", f"must be a share above 0 and at most 1, got {ratio!r}", "write e.g. 0.5"
        )
    window = t.get("ratio_window", 1000)
    consecutive = t.get("max_consecutive")
    for key, value in (("ratio_window", window), ("max_consecutive", consecutive)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(
                f"dlq.{key}", f"must be a whole number of messages >= 1, got {value!r}", "write e.g. 1000"
            )
    for name in t:
        if name not in ("enabled", "topic", "max_invalid_ratio", "ratio_window", "max_consecutive"):
            raise ConfigError(
                f"dlq.{name}", "unknown key", "use enabled, topic, max_invalid_ratio, ratio_window or max_consecutive"
            )
    return DlqSettings(enabled, topic, float(ratio) if ratio is not None else None, window, consecutive)


def _port(t: Mapping[str, Any]) -> int:
    port = t.get("port", 9400)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(
            "metrics.port", f"must be a port number 0-65535, got {port!r}", "write port = 9400 (0 disables)"
        )
    return port


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$", re.ASCII)
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _fleet(t: Mapping[str, Any]) -> FleetSettings:
    watchdog = _duration(t, "fleet.watchdog_timeout", "watchdog_timeout", default="60s") / 1000
    grace = _duration(t, "fleet.shutdown_grace", "shutdown_grace", default="30s") / 1000
    max_rss = None
    if "max_rss" in t:
        match = _SIZE.match(str(t["max_rss"]))
        if match is None:
            raise ConfigError(
                "fleet.max_rss", f"{t['max_rss']!r} is not a size", 'write e.g. max_rss = "2GiB" (or "0": off)'
            )
        max_rss = int(match.group(1)) * _SIZE_UNITS[match.group(2)] or None
    keys = ("watchdog_timeout", "shutdown_grace", "max_rss", "instance_id", "static_membership")
    for name in t:
        if name not in keys:
            raise ConfigError(f"fleet.{name}", "unknown key", f"use {', '.join(keys[:-1])} or {keys[-1]}")
    if watchdog <= 0:
        raise ConfigError("fleet.watchdog_timeout", "must be more than zero", 'write e.g. "60s"')
    instance = t.get("instance_id")
    if instance is not None and not (isinstance(instance, str) and INSTANCE_ID.match(instance)):
        raise ConfigError("fleet.instance_id", f"{instance!r} is not an instance id",
                          'use letters, digits, ".", "_" and "-", e.g. instance_id = "${POD_NAME}"')  # fmt: skip
    static = t.get("static_membership", True)
    if not isinstance(static, bool):
        raise ConfigError("fleet.static_membership", f"{static!r} is not a boolean", "write true or false")
    return FleetSettings(watchdog, grace, max_rss, instance, static)


def _env_source(key: str, value: str, what: str) -> str:
    """The content of the variable that ``env:NAME`` names."""
    name = value[len(ENV_SOURCE) :]
    if not IDENTIFIER.match(name):
        raise ConfigError(
            key, f"{value!r} does not name an environment variable", "write env:NAME, e.g. env:EVENTFLEET_PIPELINE"
        )
    text = os.environ.get(name)
    if text is None or not text.strip():
        raise ConfigError(key, f"environment variable {name} is not set or empty", f"set {name} to {what}")
    return text


def _table(doc: Mapping[str, Any], key: str, *, required: bool = True) -> Mapping[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "section is missing", f"add a [{key}] table (see examples/)")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table", f"write it as [{key}] with keys below it")
    return value


def _string(table: Mapping[str, Any], key: str, name: str, default: str | None = None) -> str:
    value = table.get(name, default)
    if value is None:
        raise ConfigError(key, "is missing", f'add {name} = "..."')
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be a non-empty string, got {value!r}", f'write {name} = "..."')
    return value


def _duration(table: Mapping[str, Any], key: str, name: str, default: str | None = None) -> int:
    text = _string(table, key, name, default)
    try:
        return parse_duration_ms(text)
    except ValueError as e:
        raise ConfigError(key, str(e), f'write e.g. {name} = "30s"') from None


def _identifier(key: str, value: Any) -> str:
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ConfigError(
            key,
            f"{value!r} is not a plain name",
            "use letters, digits and _, not starting with a digit",
        )
    return value


def _kafka(t: Mapping[str, Any], base: Path) -> KafkaSettings:
    servers = _string(t, "kafka.bootstrap_servers", "bootstrap_servers")
    topics = t.get("topics")
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not topics or not all(isinstance(x, str) and x for x in topics):
        raise ConfigError(
            "kafka.topics",
            f"must be a non-empty list of topic names, got {topics!r}",
            'write topics = ["ad-events"]',
        )
    group = _string(t, "kafka.group_id", "group_id")
    extra = t.get("config", {})
    if not isinstance(extra, Mapping):
        raise ConfigError(
            "kafka.config",
            "must be a table of librdkafka settings",
            'write [kafka.config] then "key" = value lines',
        )
    for name, value in extra.items():
        if name in MANAGED_KAFKA_KEYS:
            raise ConfigError(f"kafka.config.{name}", "is managed by eventfleet", MANAGED_KAFKA_KEYS[name])
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                f"kafka.config.{name}",
                f"must be a string, number or boolean, got {value!r}",
                "write a scalar value",
            )
    for name in t:
        if name not in _KAFKA_KEYS:
            raise ConfigError(f"kafka.{name}", "unknown key", f"use {', '.join(_KAFKA_KEYS[:-1])} or [kafka.config]")
    mode, region, security = _security(t, base)
    for name in extra:
        if ("sasl.mechanisms" if name == "sasl.mechanism" else name) in security:
            raise ConfigError(
                f"kafka.config.{name}", "is set by [kafka] auth/tls/ca_file", "remove it from [kafka.config]"
            )
    return KafkaSettings(servers, tuple(topics), group, dict(extra), mode, region, security)


_KAFKA_KEYS = (
    "bootstrap_servers",
    "topics",
    "group_id",
    "auth",
    "region",
    "username",
    "password",
    "tls",
    "ca_file",
    "config",
)


def _security(t: Mapping[str, Any], base: Path) -> tuple[str, str | None, dict[str, Any]]:
    """``auth``, ``region``, ``username``/``password``, ``tls``, ``ca_file`` -> librdkafka settings."""
    mode = _string(t, "kafka.auth", "auth", default="none")
    if mode not in auth.AUTH_MODES:
        raise ConfigError("kafka.auth", f"unknown mechanism {mode!r}", f"use one of: {', '.join(auth.AUTH_MODES)}")
    tls = t.get("tls", mode != "none")
    if not isinstance(tls, bool):
        raise ConfigError("kafka.tls", f"must be true or false, got {tls!r}", "write tls = true")
    region = None
    if mode == "msk-iam":
        if not tls:
            raise ConfigError("kafka.tls", "MSK IAM access control works over TLS only", "remove tls = false")
        auth.check_msk_iam_available()
        region = _string(t, "kafka.region", "region") if "region" in t else auth.region_from_env()
        if region is None:
            raise ConfigError(
                "kafka.region",
                'auth = "msk-iam" needs the AWS region of the cluster',
                f'add region = "us-east-1" (the cluster\'s) to [kafka], or set {" or ".join(auth.REGION_ENV)}',
            )
    elif "region" in t:
        raise ConfigError("kafka.region", 'is used by auth = "msk-iam" only', "remove it, or set auth")
    username = password = None
    if mode.startswith("scram-"):
        username = _string(t, "kafka.username", "username")
        password = _string(t, "kafka.password", "password")
    else:
        for name in ("username", "password"):
            if name in t:
                raise ConfigError(f"kafka.{name}", "is used by SCRAM only", 'remove it, or set auth = "scram-sha-512"')
    ca_file = None
    if "ca_file" in t:
        ca_path = base / _string(t, "kafka.ca_file", "ca_file")
        if not ca_path.is_file():
            raise ConfigError(
                "kafka.ca_file",
                f"file {str(ca_path)!r} does not exist",
                "point it at a PEM file, relative to the pipeline file",
            )
        if not tls:
            raise ConfigError("kafka.ca_file", "is used with TLS only", "remove it, or set tls = true")
        ca_file = str(ca_path)
    return mode, region, auth.security_settings(mode, tls, username, password, ca_file)


SCHEMA_KEYS = ("path", "decoder", "registry", "subject", "username", "password", "token", "ca_file", "region",
               "endpoint_url", "registry_name")  # fmt: skip
GLUE_ONLY_KEYS = ("region", "endpoint_url", "registry_name")


def _schema(
    t: Mapping[str, Any], base: Path, topics: tuple[str, ...]
) -> tuple[Path | None, dict[str, Any], dict[str, str], RegistrySettings | None]:
    for name in t:
        if name not in SCHEMA_KEYS:
            raise ConfigError(f"schema.{name}", "unknown key", f"use {', '.join(SCHEMA_KEYS)}")
    registry = _registry(t, base) if "registry" in t else None
    decoder = _string(t, "schema.decoder", "decoder", default="fastavro")
    if decoder == "cavro":  # an optional decoder of earlier versions, slower than fastavro's projection
        log.warning("schema.decoder = 'cavro' is deprecated and ignored: fastavro is faster; remove the key")
    elif decoder != "fastavro":
        raise ConfigError("schema.decoder", f"unknown decoder {decoder!r}", 'use "fastavro" (the default)')
    if registry is not None and "path" not in t:
        schema = _latest_schema(registry, registry.subject_for(topics[0]))
        return None, schema, field_types(schema), registry
    what = "the reader schema (.avsc)" if registry else "the writer schema (.avsc)"
    raw = _string(t, "schema.path", "path")
    path = Path(raw) if raw.startswith(ENV_SOURCE) else base / raw
    if not raw.startswith(ENV_SOURCE) and not path.is_file():
        raise ConfigError("schema.path", f"file {str(path)!r} does not exist",
                          f"point it at {what}, relative to the pipeline file")  # fmt: skip
    try:
        if raw.startswith(ENV_SOURCE):
            schema = check_schema(json.loads(_env_source("schema.path", raw, f"{what[:-8]} (.avsc JSON)")))
        else:
            schema = load_schema(path)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            "schema.path",
            f"{str(path)!r} is not a valid Avro record schema ({e})",
            "fix the schema file",
        ) from None
    return path, schema, field_types(schema), registry


def _registry(t: Mapping[str, Any], base: Path) -> RegistrySettings:
    """[schema] registry = a Confluent-compatible URL, or "glue"; with its credentials."""
    url = _string(t, "schema.registry", "registry")
    glue = url == "glue"
    if not glue and not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError("schema.registry", f"{url!r} is not an http(s) URL or \"glue\"",
                          'write e.g. registry = "http://127.0.0.1:8081/apis/ccompat/v7", or "glue"')  # fmt: skip
    for name in GLUE_ONLY_KEYS if not glue else ("username", "password", "token", "ca_file"):
        if name in t:
            other = "the AWS Glue registry" if not glue else "a Confluent-compatible registry"
            raise ConfigError(f"schema.{name}", f"is a setting of {other}", "remove it")
    options = {n: _string(t, f"schema.{n}", n) for n in (*GLUE_ONLY_KEYS, "subject", "username", "password", "token")
               if n in t}  # fmt: skip
    if "password" in options and "username" not in options:
        raise ConfigError("schema.password", "is set without a username", 'add username = "..."')
    if "token" in options and "username" in options:
        raise ConfigError("schema.token", "is set with a username", "use either username/password or a bearer token")
    ca_file = None
    if "ca_file" in t:
        ca_file = base / _string(t, "schema.ca_file", "ca_file")
        if not ca_file.is_file():
            fix = "point it at the registry's CA certificate (PEM), relative to the pipeline file"
            raise ConfigError("schema.ca_file", f"file {str(ca_file)!r} does not exist", fix)
    return RegistrySettings(url, ca_file=ca_file, **options)


def _latest_schema(settings: RegistrySettings, subject: str) -> dict[str, Any]:
    """The latest version of the subject at start-up: the reader schema when no path is given."""
    client = connect(settings)
    try:
        _ref, schema = client.latest(subject)
        return check_schema(schema)
    except UnknownSchema as e:
        fix = "register the schema first (eventfleet produce does), set subject, or set schema.path"
        raise ConfigError("schema.subject", str(e), fix) from None
    except RegistryUnavailable as e:
        raise ConfigError("schema.registry", str(e), "start the registry, or set schema.path (the reader "
                          "schema) so that start-up does not need it") from None  # fmt: skip
    except ValueError as e:
        raise ConfigError("schema.subject", f"the latest version of {subject!r} is not an Avro record ({e})",
                          "set schema.path to a record schema") from None  # fmt: skip
    finally:
        client.close()


def _field_of(key: str, name: str, types: Mapping[str, str], allowed: tuple[str, ...], what: str) -> str:
    if name not in types:
        raise ConfigError(key, f"field {name!r} is not in the schema", f"use one of: {', '.join(types)}")
    if types[name] not in allowed:
        raise ConfigError(
            key,
            f"field {name!r} has type {types[name]}, which cannot be {what}",
            f"use a field of type {' or '.join(allowed)} (not nullable)",
        )
    return name


def _window(t: Mapping[str, Any], types: Mapping[str, str]) -> WindowSettings:
    size = _duration(t, "window.size", "size")
    if size <= 0:
        raise ConfigError("window.size", "must be more than zero", 'write e.g. size = "1m"')
    grace = _duration(t, "window.grace", "grace", default="0s")
    step = _step(t, size)
    time_field = t.get("time_field")
    if time_field is not None:
        _field_of("window.time_field", time_field, types, ("long", "int"), "an event time in epoch ms")
    return WindowSettings(size, grace, time_field, step)


def _step(t: Mapping[str, Any], size: int) -> int:
    """[window] step: hopping windows of ``size`` starting every ``step`` (default: size, tumbling)."""
    if "step" not in t:
        return size
    step = _duration(t, "window.step", "step")
    shown = _format_duration(size)
    if step <= 0:
        raise ConfigError("window.step", "must be more than zero",
                          f'write e.g. step = "1m", or remove it for tumbling windows of {shown}')  # fmt: skip
    if step > size:
        raise ConfigError("window.step", f"{_format_duration(step)} is longer than window.size ({shown}): "
                          "windows would leave events out", f'make it at most {shown} (step = size is tumbling), '
                          "or remove it")  # fmt: skip
    if size % step:
        suggested = _format_duration(_divisor_below(size, step))
        raise ConfigError("window.step", f"{_format_duration(step)} does not divide window.size ({shown})",
                          f'use a step that does, e.g. step = "{suggested}"')  # fmt: skip
    return step


def _format_duration(ms: int) -> str:
    """``300000 -> "5m"``: the largest unit that divides it (the form parse_duration_ms reads)."""
    for unit, unit_ms in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % unit_ms == 0:
            return f"{ms // unit_ms}{unit}"
    return f"{ms}ms"


def _divisor_below(size: int, step: int) -> int:
    """The largest ``size / n`` below ``step`` (whole seconds when size is): a step to suggest."""
    grain = 1000 if size % 1000 == 0 else 1
    for n in range(-(-size // step), size // grain + 1):
        if size % n == 0 and (size // n) % grain == 0:
            return size // n
    return grain


def _aggregate(t: Mapping[str, Any], types: Mapping[str, str]) -> AggregateSettings:
    group_by = t.get("group_by", [])
    if not isinstance(group_by, list):
        raise ConfigError(
            "aggregate.group_by",
            "must be a list of field names",
            'write group_by = ["campaign_id"]',
        )
    for g in group_by:
        _identifier("aggregate.group_by", g)
        _field_of("aggregate.group_by", g, types, GROUPABLE, "grouped by")
    if len(set(group_by)) != len(group_by):
        raise ConfigError("aggregate.group_by", "lists a field twice", "name each field once")
    specs = t.get("metrics")
    if not isinstance(specs, Mapping) or not specs:
        raise ConfigError(
            "aggregate.metrics",
            "is missing or empty",
            'add [aggregate.metrics] with e.g. events = "count"',
        )
    metrics = []
    columns = {c: "a group-by field" for c in group_by} | {c: "a window column" for c in RESERVED_COLUMNS}
    for name, spec in specs.items():
        key = f"aggregate.metrics.{name}"
        _identifier(key, name)
        if name in group_by or name in RESERVED_COLUMNS:
            raise ConfigError(key, "clashes with a group-by field or window_start/window_end", "rename the metric")
        try:
            metric = Metric.parse(name, spec)
        except MetricError as e:
            raise ConfigError(f"{key}.{e.option}" if e.option else key, str(e), e.fix) from None
        if metric.field is not None:
            field_key = f"{key}.field" if isinstance(spec, Mapping) else key
            if metric.kind == "distinct":
                _field_of(field_key, metric.field, types, GROUPABLE, "counted distinct")
            else:
                _field_of(field_key, metric.field, types, NUMERIC, f"aggregated with {metric.kind}")
        # every output column once: quantiles and sketches add columns of their own
        own = [*estimate_columns(metric), *([sketch_column(metric)] if metric.kind in SKETCH_KINDS else [])]
        for column in own:
            if column in columns:
                raise ConfigError(key, f"its column {column!r} clashes with {columns[column]}", "rename the metric")
            columns[column] = f"a column of metric {name!r}"
        metrics.append(metric)
    return AggregateSettings(tuple(group_by), tuple(metrics))


def _sink(t: Mapping[str, Any], base: Path) -> SinkSettings:
    """The [sink] table: its type, then the keys that type takes, parsed by the sink's module."""
    from .sinks import SINK_TYPES, sink_type

    kind = _string(t, "sink.type", "type")
    if kind not in SINK_TYPES:
        raise ConfigError("sink.type", f"unknown sink {kind!r}", f"use one of: {', '.join(SINK_TYPES)}")
    keys = sink_type(kind).keys
    for name in t:
        if name not in keys:
            owner = next((k for k in SINK_TYPES if name in sink_type(k).keys), None)
            raise ConfigError(
                f"sink.{name}",
                f"is a setting of the {owner} sink, not of {kind}" if owner else "unknown key",
                f"a {kind} sink takes {', '.join(keys)}: remove {name}"
                + (f', or set type = "{owner}"' if owner else ""),
            )
    return sink_type(kind).parse(t, base)


# ``${NAME}`` in a string value; ``$${NAME}`` is the escape for a literal ``${NAME}``.
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}", re.ASCII)


def expand_env(doc: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Replace ``${NAME}`` in every string value by the environment variable NAME.

    Secrets (a SASL password, a database DSN) then come from the environment, e.g. a Kubernetes
    Secret, and the file itself (a ConfigMap) holds none. An unset variable is an error naming the
    key: an empty password sent to the broker would fail later and further from the cause.
    Substituted text is not scanned again, so a secret containing ``${`` stays as it is.
    """

    def expand(value: Any, key: str) -> Any:
        if isinstance(value, str):
            return _ENV_REF.sub(lambda m: _env_value(m, key, environ), value)
        if isinstance(value, Mapping):
            return {k: expand(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, key) for v in value]
        return value

    expanded: dict[str, Any] = expand(doc, "")
    return expanded


def _env_value(match: re.Match[str], key: str, environ: Mapping[str, str]) -> str:
    escaped, name = match.groups()
    if escaped:
        return "${" + name + "}"
    if name not in environ:
        raise ConfigError(
            key,
            f"refers to the environment variable {name}, which is not set",
            f"set {name} (e.g. from a Kubernetes Secret), or write the value itself, or $${{{name}}} for the text",
        )
    return environ[name]
