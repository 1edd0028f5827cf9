"""The ``eventfleet`` command: run, tail, produce, results, replay, kafka, postgres, registry, demo,
check-config."""

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, config
from .decode import load_schema
from .dev import kafka as devkafka
from .dev import postgres as devpostgres
from .dev import registry as devregistry
from .errors import ConfigError, EventfleetError, KafkaSetupError
from .registry import RegistryUnavailable, UnknownSchema, connect, header_size

log = logging.getLogger("eventfleet")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO, getattr(args, "worker_id", None))
    try:
        code: int = args.func(args)
        return code
    except EventfleetError as e:
        print(f"eventfleet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "worker": getattr(record, "worker", None),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(fmt: str, level: int, worker_id: int | None) -> None:
    """Text or JSON lines on stderr; every record names the worker (or "sup" for the supervisor)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = _JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d w%(worker)s] %(message)s")
    handler.setFormatter(formatter)
    worker = "-" if worker_id is None else str(worker_id)

    def tag(record: logging.LogRecord) -> bool:
        record.worker = worker
        return True

    handler.addFilter(tag)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for chatty in ("httpx", "httpcore", "botocore", "boto3", "urllib3"):  # a line per request: debug only
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eventfleet", description=__doc__)
    p.add_argument("--version", action="version", version=f"eventfleet {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a supervised fleet of workers on this instance (until SIGTERM)")
    run.add_argument("--config", required=True, help="pipeline .toml file, or env:NAME to read it from variable NAME")
    run.add_argument("--workers", type=int, help="worker processes (default: the CPUs available to this process)")
    run.add_argument(
        "--metrics-port", type=int, help="/metrics, /healthz, /readyz port (default [metrics] port; 0: off)"
    )
    run.set_defaults(func=_run)

    worker = sub.add_parser("worker", help="run one unsupervised worker (for process managers that supervise)")
    worker.add_argument("--config", required=True, help="pipeline .toml file, or env:NAME")
    worker.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    worker.add_argument("--heartbeat-fd", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--group-instance-id", help=argparse.SUPPRESS)  # a supervisor slot's static membership
    worker.add_argument("--metrics-port", type=int, default=0, help="serve this worker's /metrics (default: off)")
    worker.set_defaults(func=_worker)

    tail = sub.add_parser("tail", help="follow files into Kafka, each complete line exactly once ([ingest])")
    tail.add_argument("--config", required=True, help="pipeline .toml file with an [ingest] section, or env:NAME")
    tail.add_argument(
        "--metrics-port", type=int, help="/metrics, /healthz, /readyz port (default [ingest] metrics_port; 0: off)"
    )
    tail.set_defaults(func=_tail)

    prod = sub.add_parser("produce", help="produce synthetic events valid for the pipeline's schema")
    prod.add_argument("--config", required=True)
    prod.add_argument("--count", type=int, required=True, help="events to produce")
    prod.add_argument("--rate", type=float, default=0.0, help="events per second (default: as fast as possible)")
    prod.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    prod.add_argument("--start", type=int, help="event time of the first event, epoch ms (default: now)")
    prod.add_argument("--events-per-second", type=float, help="event-time density (default: --rate, else 2000)")
    prod.add_argument("--create-topic", action="store_true", help="create the pipeline's topic first if it is missing")
    prod.add_argument(
        "--partitions", type=int, help="partitions of a topic --create-topic creates (default: the broker's default)"
    )
    prod.add_argument("--schema", type=Path, help="write with this version of the schema (.avsc; registry pipelines)")
    prod.set_defaults(func=_produce)

    res = sub.add_parser("results", help="print the aggregates from the sink")
    res.add_argument("--config", required=True)
    res.add_argument("--format", choices=("table", "csv", "json"), default="table")
    res.set_defaults(func=_results)

    rep = sub.add_parser("replay", help="recompute windows from a time, the earliest offsets or given offsets, exactly")
    rep.add_argument("--config", required=True, help="pipeline .toml file")
    start = rep.add_mutually_exclusive_group()
    start.add_argument(
        "--from-timestamp",
        metavar="TIME",
        help="recompute every window starting at or after TIME "
        "(ISO 8601 such as 2026-11-20T10:00:00Z, or epoch ms); earlier windows stay as they are",
    )
    start.add_argument("--from-earliest", action="store_true", help="recompute everything (the table is rebuilt)")
    start.add_argument(
        "--from-offsets",
        metavar="P:O,...",
        help="recompute from the earliest window of the events "
        "at these offsets (PARTITION:OFFSET or TOPIC:PARTITION:OFFSET, comma-separated)",
    )
    rep.add_argument(
        "--into",
        metavar="TABLE",
        help="replay into a separate table with its own consumer group "
        "(a shadow backfill), leaving the live table and group untouched",
    )
    rep.add_argument(
        "--swap",
        action="store_true",
        help="promote the --into table to the live table (alone, or after the replay); needs the live fleet stopped",
    )
    rep.add_argument("--dry-run", action="store_true", help="print the plan per partition and stop")
    rep.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rep.set_defaults(func=_replay)

    check = sub.add_parser(
        "check-config", help="validate a pipeline file, check that the sink can be written, print what it computes"
    )
    check.add_argument("--config", required=True)
    check.set_defaults(func=_check_config)

    kafka = sub.add_parser("kafka", help="a local Apache Kafka (KRaft) for development: one broker or three")
    kafka.add_argument("action", choices=("up", "down", "status"))
    kafka.add_argument(
        "--port", type=int, default=devkafka.DEFAULT_PORT,
        help="broker port; one broker: controller on port+1, SASL_SSL on port+2; "
        "three: brokers on port..port+2, controllers on port+10.., SASL_SSL on port+20..",
    )  # fmt: skip
    kafka.add_argument("--dir", type=Path, help="broker folder (default: .eventfleet/kafka-PORT)")
    kafka.add_argument(
        "--brokers", type=int, choices=(1, devkafka.CLUSTER_SIZE), default=None,
        help="1 (the default) or 3: a cluster with replication factor 3 and min.insync.replicas 2",
    )  # fmt: skip
    kafka.add_argument(
        "--security", choices=devkafka.SECURITY_MODES, default=None,
        help="sasl-ssl: also a SASL_SSL listener (SCRAM-SHA-512, TLS with a local CA); kept for later 'up's",
    )  # fmt: skip
    kafka.set_defaults(func=_kafka)

    pg = sub.add_parser("postgres", help="a local PostgreSQL for development (127.0.0.1, trust auth)")
    pg.add_argument("action", choices=("up", "down", "status"))
    pg.add_argument("--port", type=int, default=devpostgres.DEFAULT_PORT, help="server port")
    pg.add_argument("--dir", type=Path, help="cluster folder (default: .eventfleet/postgres-PORT)")
    pg.set_defaults(func=_postgres)

    reg = sub.add_parser("registry", help="a local schema registry (Apicurio, Confluent-compatible API)")
    reg.add_argument("action", choices=("up", "down", "status"))
    reg.add_argument("--port", type=int, default=devregistry.DEFAULT_PORT, help="API port")
    reg.add_argument("--management-port", type=int, default=0, help="health checks' port (default: port+1000)")
    reg.add_argument("--dir", type=Path, help="registry folder (default: .eventfleet/registry-PORT)")
    reg.set_defaults(func=_registry)

    demo = sub.add_parser("demo", help="local Kafka, generated events, workers, results, events/s")
    demo.add_argument("--config", default="examples/ad-stats.toml", help="pipeline to demo")
    demo.add_argument("--events", type=int, default=1_000_000)
    demo.add_argument("--partitions", type=int, default=8)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--port", type=int, default=devkafka.DEFAULT_PORT, help="local broker port")
    demo.add_argument(
        "--dsn", help="a postgres pipeline's PostgreSQL instead of its sink.dsn (libpq connection string)"
    )
    demo.add_argument("--registry", nargs="?", const="local", metavar="URL",
                      help="frame values for a schema registry (default: a local one on 127.0.0.1:8081)")  # fmt: skip
    demo.add_argument("--from-files", action="store_true",
                      help="the events as lines of a rotated log file, read by eventfleet tail")  # fmt: skip
    demo.set_defaults(func=_demo)
    return p


def _run(args: argparse.Namespace) -> int:
    from .fleet import run

    extra = ["--log-format", args.log_format] + (["-v"] if args.verbose else [])
    return run(config.load(args.config), args.workers, args.metrics_port, extra)


def _worker(args: argparse.Namespace) -> int:
    from .worker import run

    pipeline = config.load(args.config)
    if args.metrics_port and args.heartbeat_fd is None:
        from prometheus_client import start_http_server

        from .http import PortError

        try:  # before the worker joins the group
            start_http_server(args.metrics_port)
        except OSError as e:
            raise PortError(args.metrics_port, e, "Choose a free one with --metrics-port N (0 turns it off)") from None
    return run(pipeline, args.worker_id, args.heartbeat_fd, args.group_instance_id)


def _tail(args: argparse.Namespace) -> int:
    from .ingest.tail import run

    pipeline = config.load(args.config)
    if pipeline.ingest is None:
        raise ConfigError("ingest", "section is missing", 'add [ingest] with paths = ["/var/log/app/*.log"]')
    return run(pipeline, args.metrics_port)


def _produce(args: argparse.Namespace) -> int:
    from .produce import produce
    from .source import check_topics, create_topic

    pipeline = config.load(args.config)
    topic = pipeline.kafka.topics[0]
    if args.create_topic and create_topic(pipeline, topic, args.partitions):
        print(f"created topic {topic}" + (f" with {args.partitions} partitions" if args.partitions else ""))
    check_topics(pipeline, topics=(topic,))  # not a delivery error per event: one line, with the fix
    schema = None
    if args.schema is not None:
        if pipeline.registry is None:
            raise ConfigError("--schema", "needs a pipeline with [schema] registry", "remove --schema")
        try:
            schema = load_schema(args.schema)
        except (OSError, ValueError) as e:
            raise ConfigError("--schema", f"{str(args.schema)!r} is not an Avro record schema ({e})",
                                     "point it at an .avsc file") from None  # fmt: skip
    s = produce(pipeline, args.count, args.rate, args.seed, args.start, args.events_per_second, schema=schema)
    print(
        f"produced {s.produced:,} events to {pipeline.kafka.topics[0]} in {s.seconds:.1f} s "
        f"({s.produced / max(s.seconds, 1e-9):,.0f} events/s); event times {_iso(s.first_event_ms)} .. "
        f"{_iso(s.last_event_ms)}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from .replay import Mode, parse_offsets, parse_timestamp, replay

    pipeline = config.load(args.config)
    mode = None
    if args.from_timestamp is not None:
        mode = Mode("timestamp", timestamp_ms=parse_timestamp(args.from_timestamp))
    elif args.from_earliest:
        mode = Mode("earliest")
    elif args.from_offsets is not None:
        mode = Mode("offsets", offsets=parse_offsets(args.from_offsets))
    return replay(pipeline, mode, args.into, args.swap, args.dry_run, args.yes, args.verbose)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _results(args: argparse.Namespace) -> int:
    from .sinks import open_sink

    pipeline = config.load(args.config)
    sink = open_sink(pipeline)
    try:
        columns, rows = sink.results()
    finally:
        sink.close()
    write_rows(columns, rows, args.format, sys.stdout)
    return 0


def write_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, out: Any) -> None:
    """Print rows as an aligned table, CSV, or JSON (a list of objects keyed by column)."""
    if fmt == "json":
        json.dump([dict(zip(columns, row, strict=True)) for row in rows], out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        w.writerows(rows)
    else:
        cells = [columns, *([_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in rows)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, r in enumerate(cells):
            out.write("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) + "\n")
            if n == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")


def _cell(column: str, value: Any) -> str:
    if column in ("window_start", "window_end") and isinstance(value, int):
        return _iso(value)[:-5] + "Z"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _check_config(args: argparse.Namespace) -> int:
    from .aggregate import updater_source
    from .decode import projection_source
    from .sinks import check_sink

    pipeline = config.load(args.config)
    sink_lines = check_sink(pipeline)  # connects: a sink the workers could not use is an error here
    writer, reader, start, registry_line = dict(pipeline.schema), None, 0, ""
    if pipeline.registry is not None:  # likewise a registry: checked before anything is said OK
        writer, registry_line = _check_registry(pipeline)
        reader, start = dict(pipeline.schema), header_size(pipeline.registry)
    print(f"{args.config}: OK")
    print(f"  reads {', '.join(pipeline.kafka.topics)} as group {pipeline.kafka.group_id}")
    print(f"  windows of {pipeline.window.size_ms} ms, grace {pipeline.window.grace_ms} ms")
    where = f"topic {pipeline.sink.topic}" if pipeline.sink.type == "kafka" else f"table {pipeline.sink.table}"
    print(f"  writes {pipeline.sink.type} {where} ({', '.join(pipeline.column_types())})")
    for line in sink_lines:
        print(f"  sink: {line}")
    if registry_line:
        print(f"  registry: {registry_line}")
    fields = pipeline.event_fields()
    decoder = projection_source(writer, fields, reader, start)[0]
    updater = updater_source(pipeline.aggregate.group_by, pipeline.aggregate.metrics, fields)
    print(f"  per event it runs ({', '.join(fields)} as r[0], r[1], ...):\n{decoder}\n{updater}")
    return 0


def _check_registry(pipeline: config.Pipeline) -> tuple[dict[str, Any], str]:
    """The registry answers, the subject exists, and its latest version resolves to the fields
    the pipeline reads; returns that version's schema and a line saying so."""
    from .decode import ResolutionError, make_resolving_projection

    assert pipeline.registry is not None
    settings = pipeline.registry
    subject = settings.subject_for(pipeline.kafka.topics[0])
    client = connect(settings)
    try:
        ref, latest = client.latest(subject)
    except UnknownSchema as e:
        raise ConfigError("schema.subject", str(e), "register the schema (eventfleet produce does), or "
                                 "set subject to the topic's subject") from None  # fmt: skip
    except RegistryUnavailable as e:
        raise EventfleetError(f"{e}. Fix: start the registry (eventfleet registry up), or correct [schema] "
                              "registry and its credentials") from None  # fmt: skip
    finally:
        client.close()
    try:
        make_resolving_projection(latest, dict(pipeline.schema), pipeline.event_fields(), client.header_size)
    except ResolutionError as e:
        raise ConfigError("schema.subject", f"the latest version of {subject!r} (schema {ref}): {e}",
                                 "give the field a default in the reader schema, or fix the producer's "
                                 "schema") from None  # fmt: skip
    where = "AWS Glue" if settings.is_glue else settings.url
    return latest, f"{where}, subject {subject}: its latest version (schema {ref}) resolves to the fields read"


def _kafka(args: argparse.Namespace) -> int:
    home: Path = args.dir or devkafka.default_home(args.port)
    is_cluster = devkafka.Cluster.exists(home)
    if args.action == "up" and args.brokers is not None and (args.brokers > 1) != is_cluster and home.exists():
        kind = "a cluster" if is_cluster else "one broker"
        raise KafkaSetupError(
            f"{home} holds {kind}, not --brokers {args.brokers}: run 'eventfleet kafka down --port {args.port}' and "
            "remove the folder, or use another --port"
        )
    is_cluster = is_cluster or (args.brokers or 1) > 1
    marker = home / "security"
    security = args.security or (marker.read_text().strip() if marker.exists() else "none")
    server: devkafka.Broker | devkafka.Cluster
    if is_cluster:
        server = devkafka.Cluster(home, args.port, security=security)
    else:
        server = devkafka.Broker(home, args.port, security=security)
    if args.action == "up":
        if isinstance(server, devkafka.Cluster):
            started = server.up()
            what = f"started brokers {', '.join(map(str, started))}" if started else "every broker was running"
            print(f"Kafka {devkafka.KAFKA_VERSION} cluster is up at {server.bootstrap} ({what}; folder {home})")
            print("\n".join(server.status()))
        else:
            server.up()
            print(f"Kafka {devkafka.KAFKA_VERSION} is up at {server.bootstrap} (pid {server.pid()}, folder {home})")
        if security != "none":
            marker.write_text(security)
            _print_secure_listener(server)
    elif args.action == "down":
        if isinstance(server, devkafka.Cluster):
            stopped = server.down()
            print(f"stopped brokers {', '.join(map(str, stopped))}" if stopped else f"no broker of ours runs in {home}")
        else:
            print("stopped" if server.down() else f"no broker of ours is running in {server.home}")
    else:
        if isinstance(server, devkafka.Cluster):
            print("\n".join(server.status()))
            return 0 if len(server.running()) == len(server.brokers) else 1
        pid = server.pid()
        up = devkafka.reachable(server.bootstrap, timeout_s=3)
        print(f"broker {server.node_id} {server.bootstrap} pid {pid or '-'} {'running' if up else 'stopped'}")
        return 0 if up else 1
    return 0


def _print_secure_listener(server: devkafka.Broker | devkafka.Cluster) -> None:
    """The SASL_SSL listener, the CA and the credentials, and the pipeline lines that use them."""
    creds = server.credentials()
    print(f"SASL_SSL (SCRAM-SHA-512, TLS) listener: {server.secure_bootstrap}")
    print(f"CA file: {creds.ca_file}")
    print(f"user: {creds.username}  password: {creds.password}")
    print("In the pipeline file:")
    print(
        f'[kafka]\nbootstrap_servers = "{server.secure_bootstrap}"\nauth = "scram-sha-512"\n'
        f'username = "{creds.username}"\npassword = "{creds.password}"\ntls = true\nca_file = "{creds.ca_file}"'
    )


def _postgres(args: argparse.Namespace) -> int:
    server = devpostgres.Server(args.dir or devpostgres.default_home(args.port), args.port)
    if args.action == "up":
        server.up()
        print(f'PostgreSQL is up: dsn = "{server.dsn}" (folder {server.home})')
    elif args.action == "down":
        print("stopped" if server.down() else f"no server of ours is running in {server.home}")
    else:
        up = server.running()
        print(f"{server.dsn}: {'running' if up else 'not running'} (folder {server.home})")
        return 0 if up else 1
    return 0


def _registry(args: argparse.Namespace) -> int:
    registry = devregistry.Registry(args.dir or devregistry.default_home(args.port), args.port, args.management_port)
    if args.action == "up":
        state = "is up" if registry.up() else "was already running"
        where = f"(pid {registry.pid()}, folder {registry.home})"
        print(f"Apicurio Registry {devregistry.APICURIO_VERSION} {state} at {registry.url} {where}")
    elif args.action == "down":
        print("stopped" if registry.down() else f"no registry of ours is running in {registry.home}")
    else:
        pid, up = registry.pid(), registry.answers()
        if pid is not None:
            print(f"{'running' if up else 'starting'}: {registry.url} (pid {pid}, folder {registry.home})")
        elif up:
            print(f"running: {registry.url} answers, but not a registry of ours (none runs in {registry.home})")
        else:
            print(f"stopped: nothing answers at {registry.url} (folder {registry.home})")
        return 0 if up else 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import demo

    return demo(Path(args.config), args.events, args.partitions, args.workers, args.port, args.registry, args.dsn,
                args.from_files)  # fmt: skip
