"""``eventfleet demo``: a local broker, a fresh topic, generated events, workers, results.

Each run gets its own topic, group and SQLite file under ``.eventfleet/demo/`` (named by the
run), so a demo never mixes with an earlier one and its pipeline file can be reused with
``eventfleet results --config``.
"""

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from . import config, devkafka
from .cli import write_rows
from .errors import EventfleetError, SinkError
from .produce import produce
from .progress import Progress
from .sinks import Sink, check_sink, open_sink, positions_in_kafka, use_consumer

DEMO_DIR = Path(".eventfleet") / "demo"
CATCH_UP_TIMEOUT_S = 900.0


def demo(
    config_path: Path,
    count: int,
    partitions: int,
    workers: int,
    port: int,
    registry: str | None = None,
    dsn: str | None = None,
) -> int:
    """Run the pipeline of ``config_path``, whatever its sink. ``registry``: frame the values for
    this schema registry URL ("local": a local registry on 127.0.0.1:8081, started if none answers
    there); ``dsn``: a postgres pipeline's PostgreSQL instead of its own."""
    config.load(config_path)  # fail early, with the key and the fix
    bootstrap = f"127.0.0.1:{port}"
    if not devkafka.reachable(bootstrap, timeout_s=3):
        print(f"starting a local Kafka {devkafka.KAFKA_VERSION} on {bootstrap} (first time: Maven fetches the jars)")
        devkafka.Broker(devkafka.default_home(port), port).up()
    if registry == "local":
        registry = _local_registry()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    pipeline_file = _demo_pipeline(config_path, bootstrap, run_id, registry, dsn)
    pipeline = config.load(pipeline_file)
    if pipeline.sink.type == "postgres":  # the one sink on a server of its own: say how to start it
        try:
            check_sink(pipeline)
        except SinkError as e:
            raise SinkError(f"{e} (or pass eventfleet demo --dsn DSN)") from None
    topic = pipeline.kafka.topics[0]
    admin = AdminClient(pipeline.kafka.client_settings())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    print(f"topic {topic} with {partitions} partitions; pipeline {pipeline_file}")

    summary = produce(pipeline, count, seed=42)
    print(f"produced {count:,} events in {summary.seconds:.1f} s")

    log_path = pipeline_file.with_name(f"{run_id}-fleet.log")
    started = time.monotonic()
    with open(log_path, "wb") as log:  # the fleet keeps its own copy of the descriptor
        fleet = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(pipeline_file), "--workers", str(workers),
             "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
    try:
        _wait_caught_up(pipeline, topic, [fleet])
        elapsed = time.monotonic() - started
        done_at = time.time()
    finally:
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
        code = fleet.wait(120)
    if code:
        raise EventfleetError(f"the fleet exited with {code}; see {log_path}")

    with _reader(pipeline) as sink:
        columns, rows = sink.results()
        positions = sink.read_positions(pipeline.kafka.group_id, [(topic, p) for p in range(partitions)])
    late = sum(p.late_events for p in positions.values())
    invalid = sum(p.invalid_events for p in positions.values())
    counted = sum(row[columns.index("events")] for row in rows) if "events" in columns else None
    print(f"\nfirst rows of {len(rows)} (eventfleet results --config {pipeline_file}):")
    write_rows(columns, rows[:12], "table", sys.stdout)
    print(
        f"\n{count:,} events: {counted if counted is not None else '?':,} aggregated, {late:,} late "
        f"(window closed, counted), {invalid:,} undecodable"
    )
    firsts = [float(t) for t in re.findall(r"first message at ([\d.]+)", log_path.read_text())]
    busy = done_at - min(firsts) if firsts else elapsed
    who = f"{workers} worker" + ("s" if workers != 1 else "")
    print(
        f"{who}: {count / busy:,.0f} events/s from the first event consumed to every result durable "
        f"({busy:.1f} s); {elapsed:.1f} s end to end, incl. process start-up and the group join"
    )
    stops = re.findall(r"w(\d+)\] worker stopped: (\d+) events in [\d.]+ s from first to last, (\d+) events/s",
                       log_path.read_text())  # fmt: skip
    for worker, events, rate in stops:
        print(f"  worker {worker}: {int(events):,} events at {int(rate):,} events/s (first to last event)")
    print(f"fleet log: {log_path}")
    return 0


def _local_registry() -> str:
    """The local schema registry's URL, started first if none answers on its default port."""
    from . import devregistry

    local = devregistry.Registry(devregistry.default_home(devregistry.DEFAULT_PORT), devregistry.DEFAULT_PORT)
    if not local.answers():
        print(
            f"starting a local schema registry on 127.0.0.1:{devregistry.DEFAULT_PORT} (first time: Maven fetches it)"
        )
        local.up()
    return local.url


def _demo_pipeline(config_path: Path, bootstrap: str, run_id: str, registry: str | None, dsn: str | None) -> Path:
    """Copy the pipeline with this run's topic, group, broker and sink file, table or topic, and
    the schema registry the values are framed for."""
    doc = tomllib.loads(config_path.read_text())
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc["kafka"]["topics"] = [f"{doc['kafka']['topics'][0]}-{run_id}"]
    doc["kafka"]["group_id"] = f"{doc['kafka']['group_id']}-{run_id}"
    doc["schema"]["path"] = os.path.relpath((config_path.parent / doc["schema"]["path"]).resolve(), DEMO_DIR.resolve())
    if registry is not None:
        doc["schema"]["registry"] = registry
    sink = doc["sink"]
    if sink["type"] == "postgres":  # a fresh table per run in the pipeline's database
        sink["table"] = f"{sink['table']}_{run_id.replace('-', '_')}"
        if dsn is not None:
            sink["dsn"] = dsn
    elif sink["type"] == "kafka":  # a fresh output topic per run on the demo's broker
        sink["topic"] = f"{sink['topic']}-{run_id}"
    else:
        sink["path"] = f"{run_id}.db"
    doc.setdefault("flush", {})["interval"] = "1s"
    path = DEMO_DIR / f"{run_id}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def _wait_caught_up(pipeline: config.Pipeline, topic: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until the sink's positions reach the end of every partition."""
    probe = Consumer({**pipeline.kafka.client_settings(), "group.id": "eventfleet-demo-probe"})
    try:
        meta = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta}
    finally:
        probe.close()
    total = sum(ends.values())
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    with _reader(pipeline) as sink, Progress(total, "aggregate") as bar:
        while time.monotonic() < deadline:
            stored = sink.read_positions(pipeline.kafka.group_id, [(topic, p) for p in ends])
            done = sum(min(pos.next_offset, ends[p]) for (_, p), pos in stored.items())
            bar.update(done - bar.n)
            if done >= total:
                return
            if any(p.poll() is not None for p in procs):
                raise EventfleetError("a worker exited before the topic was processed; see its log")
            time.sleep(0.2)
    raise EventfleetError(f"not caught up within {CATCH_UP_TIMEOUT_S:.0f} s")


@contextmanager
def _reader(pipeline: config.Pipeline) -> Iterator[Sink]:
    """The pipeline's sink, for reading results and positions beside the fleet. The kafka sink's
    positions are its group's committed offsets: it reads them with a consumer of the group that
    never subscribes (so never joins)."""
    sink = open_sink(pipeline)
    reader = None
    try:
        if positions_in_kafka(sink):
            reader = Consumer({**pipeline.kafka.client_settings(), "group.id": pipeline.kafka.group_id})
            use_consumer(sink, reader)
        yield sink
    finally:
        sink.close()
        if reader is not None:
            reader.close()
