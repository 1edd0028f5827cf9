"""Helpers for tests against the real broker: topics, events, worker processes, ground truth.

Ground truth is computed here in plain Python from the events the test itself produced, never
by calling eventfleet's aggregation code.
"""

import io
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer.sinks.sql import TABLE_SUFFIXES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schemas" / "ad_event.avsc"
WINDOW_MS = 10_000
GRACE_MS = 5_000
TABLE = "ad_stats"

pytestmark = pytest.mark.integration

# The kafka sink's records as this test suite expects them, written out by hand (not derived by
# eventfleet): a record that does not follow them fails to decode or decodes to wrong values.
OUTPUT_KEY_SCHEMA = {
    "type": "record",
    "name": "WindowKey",
    "namespace": "eventfleet",
    "fields": [
        {"name": "window_start", "type": "long"},
        {"name": "campaign_id", "type": "string"},
        {"name": "event_type", "type": {"type": "enum", "name": "EventType", "namespace": "eventfleet.examples",
                                        "symbols": ["impression", "click", "conversion"]}},
    ],
}  # fmt: skip
OUTPUT_VALUE_SCHEMA = {
    "type": "record",
    "name": "WindowDelta",
    "namespace": "eventfleet",
    "fields": [
        {"name": "window_start", "type": "long"},
        {"name": "window_end", "type": "long"},
        *OUTPUT_KEY_SCHEMA["fields"][1:],
        {"name": "events", "type": "long"},
        {"name": "spend", "type": "long"},
        {"name": "min_price", "type": "long"},
        {"name": "max_price", "type": "long"},
        {"name": "source_topic", "type": "string"},
        {"name": "source_partition", "type": "int"},
    ],
}


def encode(record: dict[str, Any]) -> bytes:
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["fields"][1]["type"] = "long"  # same bytes as timestamp-millis
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), record)
    return buf.getvalue()


def generate(n: int, partitions: int, seed: int, start_ms: int = 1_800_000_000_000) -> list[tuple[int, dict[str, Any]]]:
    """n events spread over partitions: time advances 1 ms an event per partition, 3% arrive
    up to 25 s late (so some miss their window: 10 s windows with 5 s grace)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = i % partitions
        t = start_ms + (i // partitions) * 2
        if rng.random() < 0.03:
            t -= rng.randrange(25_000)
        out.append(
            (
                p,
                {
                    "event_id": f"e{i}",
                    "ts": t,
                    "campaign_id": f"c{rng.randrange(40)}",
                    "ad_id": f"a{rng.randrange(5)}",
                    "event_type": rng.choice(["impression", "impression", "impression", "click", "conversion"]),
                    "user_id": rng.randrange(10**6),
                    "country": rng.choice(["DE", "FR", "US"]),
                    "device": rng.choice(["desktop", "mobile"]),
                    "price_micros": rng.randrange(5_000_000),
                },
            )
        )
    return out


@dataclass
class Truth:
    rows: dict[tuple[Any, ...], list[int]] = field(default_factory=dict)
    late: int = 0  # (event, window) pairs not aggregated: events, with tumbling windows
    partly_late: int = 0  # hopping: events late for some of their windows only


def ground_truth(events: list[tuple[int, dict[str, Any] | bytes]], step_ms: int = WINDOW_MS) -> Truth:
    """The rules of docs/design.md ("Events, windows, lateness") in a few lines: per-partition
    watermark in offset order; an event in every window [s, s + size) with s a multiple of
    ``step_ms`` (the size: tumbling) and s <= t < s + size; each window late apart when its end +
    grace <= watermark; count/sum/min/max per (window, campaign, type)."""
    truth = Truth()
    watermark: dict[int, int] = {}
    for p, r in events:
        if not isinstance(r, dict):
            continue  # an undecodable message: not aggregated
        t = r["ts"]
        wm = max(watermark.get(p, t), t)
        watermark[p] = wm
        late = 0
        starts = range(t // step_ms * step_ms, t - WINDOW_MS, -step_ms)  # scanned down from the newest
        for start in starts:
            if start + WINDOW_MS + GRACE_MS <= wm:
                late += 1
                continue
            key = (start, r["campaign_id"], r["event_type"])
            price = r["price_micros"]
            if key not in truth.rows:
                truth.rows[key] = [0, 0, price, price]
            row = truth.rows[key]
            row[0] += 1
            row[1] += price
            row[2] = min(row[2], price)
            row[3] = max(row[3], price)
        truth.late += late
        truth.partly_late += 0 < late < len(starts)
    return truth


class Kafka:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def topic(self, partitions: int) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        self.admin.create_topics([NewTopic(name, partitions)])[name].result(30)  # the broker's replication factor
        return name

    def produce(self, topic: str, events: list[tuple[int, dict[str, Any] | bytes]], pace_s: float = 0.0) -> None:
        """Produce in order, each to its partition; ``pace_s`` spreads them over that long."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 5})
        chunk = 2000
        for i in range(0, len(events), chunk):
            for p, r in events[i : i + chunk]:
                value = r if isinstance(r, bytes) else encode(r)
                while True:
                    try:
                        producer.produce(topic, value, partition=p)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
            if pace_s:
                time.sleep(pace_s * chunk / len(events))
        assert producer.flush(60) == 0

    def produce_in_background(self, topic: str, events: list[tuple[int, dict[str, Any] | bytes]],
                              pace_s: float) -> threading.Thread:  # fmt: skip
        """Start producing ``events`` over about ``pace_s`` seconds; join the thread to wait."""
        thread = threading.Thread(target=self.produce, args=(topic, events, pace_s))
        thread.start()
        return thread

    def ends(self, topic: str) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "test-probe"})
        try:
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        finally:
            c.close()

    def committed(self, topic: str, group: str, partitions: int) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Kafka:
    return Kafka(kafka_bootstrap)


def read_to_end(bootstrap: str, topic: str, isolation: str = "read_committed", timeout_s: float = 120) -> list[Any]:
    """Every message of ``topic`` from its start to its end (the last stable offset with
    read_committed), in offset order per partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True})  # fmt: skip
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, q, 0) for q in parts])
        pending, out = set(parts), []
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, f"{topic}: partitions {pending} never reached their end"
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    pending.discard(m.partition())
                    continue
                out.append(m)
        return out
    finally:
        c.close()


def read_deltas(
    bootstrap: str, topic: str, isolation: str = "read_committed", value_schema: dict[str, Any] | None = None
) -> list[tuple[dict[str, Any], int]]:
    """Every (key, value) record of a kafka-sink output topic, decoded with the schemas above (or
    ``value_schema``: a pipeline with more metrics), from the start to the end (the last stable
    offset with read_committed), with its partition."""
    key_schema = parse_schema(OUTPUT_KEY_SCHEMA)
    value_schema = parse_schema(value_schema or OUTPUT_VALUE_SCHEMA)
    out = []
    for m in read_to_end(bootstrap, topic, isolation):
        key = schemaless_reader(io.BytesIO(m.key()), key_schema, None)
        value = schemaless_reader(io.BytesIO(m.value()), value_schema, None)
        assert isinstance(key, dict) and isinstance(value, dict)
        assert key == {k: value[k] for k in key}, (key, value)  # keyed by window + group-by values
        out.append((value, m.partition()))
    return out


def combine(deltas: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[int]]:
    """What a downstream consumer does with the deltas: add counts and sums, min of the mins,
    max of the maxes, per (window, group-by values)."""
    out: dict[tuple[Any, ...], list[int]] = {}
    for d in deltas:
        assert d["window_end"] == d["window_start"] + WINDOW_MS
        key = (d["window_start"], d["campaign_id"], d["event_type"])
        row = out.get(key)
        if row is None:
            out[key] = [d["events"], d["spend"], d["min_price"], d["max_price"]]
        else:
            row[0] += d["events"]
            row[1] += d["spend"]
            row[2] = min(row[2], d["min_price"])
            row[3] = max(row[3], d["max_price"])
    return out


@dataclass
class Pipeline:
    path: Path
    db: Path
    topic: str
    group: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dsn: str | None = None  # a PostgreSQL sink (read by the test with its own queries); None: SQLite at db
    table: str = TABLE
    sink: str = "sqlite"
    bootstrap: str = ""  # the kafka sink: its positions and output live on the broker
    out_topic: str = ""
    other_tables: list[str] = field(default_factory=list)  # PostgreSQL: dropped too at the end (shadows)
    value_schema: dict[str, Any] | None = None  # the kafka sink's records, when the metrics are not the four

    def start_worker(self, fault: str | None = None, metrics_port: int = 0) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.pop("EVENTFLEET_FAULT", None)
        if fault:
            env["EVENTFLEET_FAULT"] = fault
        log = open(self.workdir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "consumer", "worker", "--config", str(self.path)]
        if metrics_port:
            cmd += ["--metrics-port", str(metrics_port)]
        proc = subprocess.Popen(cmd, stderr=log, stdout=log, env=env)
        self.procs.append(proc)
        return proc

    def start_fleet(
        self, workers: int, metrics_port: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """``eventfleet run``: the supervisor and its workers, logging to fleet.log."""
        full_env = {**os.environ, **(env or {})}
        log = open(self.workdir / "fleet.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "consumer", "run", "--config", str(self.path), "--workers", str(workers),
               "--metrics-port", str(metrics_port)]  # fmt: skip
        proc = subprocess.Popen(cmd, stderr=log, stdout=log, env=full_env)
        self.procs.append(proc)
        return proc

    def fleet_log(self) -> str:
        path = self.workdir / "fleet.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("worker-*.log")))

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def stop_all(self) -> list[int]:
        return [self.stop(p) for p in self.procs if p.poll() is None]

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
        """Rows from the sink's database (``?`` placeholders); None while the table does not exist."""
        if self.dsn is not None:
            import psycopg

            with psycopg.connect(self.dsn, connect_timeout=10) as pg:
                try:
                    return pg.execute(sql.replace("?", "%s"), params).fetchall()
                except psycopg.errors.UndefinedTable:
                    return None
        if not self.db.exists():
            return None
        with sqlite3.connect(self.db) as db:
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.OperationalError:
                return None

    def execute(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Run statements (``?`` placeholders) in one transaction on the sink's database: a test
        changing the table behind eventfleet's back."""
        if self.dsn is not None:
            import psycopg

            with psycopg.connect(self.dsn, connect_timeout=10) as pg:  # commits on leaving
                for sql, params in statements:
                    pg.execute(sql.replace("?", "%s"), params)
            return
        with sqlite3.connect(self.db) as db:  # commits on leaving
            for sql, params in statements:
                db.execute(sql, params)

    def with_table(self, table: str, group: str) -> "Pipeline":
        """The same sink's other table, under another consumer group: for reading it."""
        return Pipeline(self.path, self.db, self.topic, group, self.workdir, dsn=self.dsn, table=table)

    def positions(self) -> dict[int, tuple[int, int, int]]:
        """partition -> (next_offset, late_events, invalid_events), read from the sink directly
        (the kafka sink: from the group's committed offsets and their metadata)."""
        if self.sink == "kafka":
            return self._kafka_positions()
        rows = self.query(
            f"SELECT partition, next_offset, late_events, invalid_events FROM {self.table}_positions "
            "WHERE consumer_group = ? AND topic = ?",
            (self.group, self.topic),
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows or []}

    def _kafka_positions(self) -> dict[int, tuple[int, int, int]]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            parts = c.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            try:  # waits while a transaction holds offsets (require_stable): "not yet" for the caller
                tps = c.committed([TopicPartition(self.topic, q) for q in parts], timeout=5)
            except KafkaException:
                return {}
        finally:
            c.close()
        out = {}
        for tp in tps:
            if tp.offset >= 0:
                meta = json.loads(tp.metadata)
                out[tp.partition] = (tp.offset, meta["late"], meta["invalid"])
        return out

    def wait_caught_up(self, ends: dict[int, int], timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pos = self.positions()
            if all(pos.get(p, (0,))[0] >= end for p, end in ends.items() if end > 0):
                return
            time.sleep(0.2)
        raise AssertionError(f"not caught up: {self.positions()} vs {ends}\n{self.logs()[-5000:]}")

    def results(self) -> dict[tuple[Any, ...], list[int]]:
        if self.sink == "kafka":  # a read_committed consumer of the output topic, written here
            deltas = read_deltas(self.bootstrap, self.out_topic, value_schema=self.value_schema)
            assert all(d["source_topic"] == self.topic for d, _ in deltas)
            return combine([d for d, _ in deltas])
        rows = self.query(
            f"SELECT window_start, window_end, campaign_id, event_type, events, spend, min_price, max_price "
            f"FROM {self.table}"
        )
        assert rows is not None, f"no table {self.table}"
        for r in rows:
            assert r[1] == r[0] + WINDOW_MS
        return {(r[0], r[2], r[3]): list(r[4:]) for r in rows}


@pytest.fixture
def pipeline(kafka: Kafka, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory: pipeline(partitions) -> Pipeline with a fresh topic, group and SQLite file, or
    with ``sink="postgres"`` a fresh table in the test session's PostgreSQL."""
    made: list[Pipeline] = []

    def make(
        partitions: int = 8,
        flush: str = "500ms",
        extra: str = "",
        sections: str = "",
        sink: str = "sqlite",
        schema: str = "",
        step_ms: int = WINDOW_MS,
        metrics: str = "",
    ) -> Pipeline:
        """``sink="kafka"``: the output topic <topic>.out, transaction.timeout.ms 10 s; ``schema``:
        more lines of the [schema] table (a registry); ``step_ms``: hopping windows of WINDOW_MS
        starting every step_ms (the default: tumbling windows); ``metrics``: more lines of
        [aggregate.metrics], after the four of every pipeline."""
        topic = kafka.topic(partitions)
        group = f"g-{topic}"
        workdir = tmp_path / topic
        workdir.mkdir()
        db = workdir / "stats.db"
        dsn, table = None, TABLE
        sink_section = f'type = "sqlite"\npath = "{db}"\ntable = "{TABLE}"'
        if sink == "postgres":
            dsn, table = request.getfixturevalue("postgres").dsn, f"{TABLE}_{topic.split('-')[1]}"
            sink_section = f'type = "postgres"\ndsn = "{dsn}"\ntable = "{table}"'
        if sink == "kafka":
            sink_section = f'type = "kafka"\ntopic = "{topic}.out"\n'
            sink_section += '[sink.config]\n"transaction.timeout.ms" = 10000'
        path = workdir / "pipeline.toml"
        path.write_text(
            f"""
[kafka]
bootstrap_servers = "{kafka.bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
[kafka.config]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000
{extra}
[schema]
path = "{SCHEMA_PATH}"
{schema}
[window]
size = "{WINDOW_MS}ms"
grace = "{GRACE_MS}ms"
time_field = "ts"
step = "{step_ms}ms"
[aggregate]
group_by = ["campaign_id", "event_type"]
[aggregate.metrics]
events = "count"
spend = "sum:price_micros"
min_price = "min:price_micros"
max_price = "max:price_micros"
{metrics}
[sink]
{sink_section}
[flush]
interval = "{flush}"
{sections}
"""
        )
        p = Pipeline(
            path,
            db,
            topic,
            group,
            workdir,
            dsn=dsn,
            table=table,
            sink=sink,
            bootstrap=kafka.bootstrap,
            out_topic=f"{topic}.out",
        )
        made.append(p)
        return p

    yield make
    for p in made:
        for proc in p.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if p.dsn is not None:
            import psycopg

            with psycopg.connect(p.dsn, autocommit=True) as pg:
                for table in (p.table, *p.other_tables):
                    for suffix in TABLE_SUFFIXES:
                        pg.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


def wait_for(condition: Any, timeout_s: float, what: str = "condition") -> None:
    """Poll ``condition`` every 0.1 s until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def run_through_kills(
    kafka: "Kafka",
    p: Pipeline,
    events: list[tuple[int, Any]],
    produce_s: float,
    delays: tuple[float, ...],
    partitions: int,
) -> dict[int, int]:
    """Two workers while ``events`` are produced over ``produce_s``; one SIGKILLed after each of
    ``delays`` (not multiples of the flush interval: kills land between flushes) and restarted.
    Returns the end offsets, once both workers have caught up and stopped cleanly."""
    producing = kafka.produce_in_background(p.topic, events, produce_s)
    survivor = p.start_worker()
    victim = p.start_worker()
    wait_for(lambda: len(p.positions()) == partitions, 90, "the group to form and flush")
    for delay in delays:
        time.sleep(delay)
        victim.kill()
        victim.wait()
        victim = p.start_worker()
    assert producing.is_alive()  # every kill landed mid-stream
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert survivor.poll() is None
    assert p.stop_all() == [0, 0]
    return ends


def assert_exact(p: Pipeline, truth: Truth, ends: dict[int, int]) -> None:
    got = p.results()
    missing = truth.rows.keys() - got.keys()
    extra = got.keys() - truth.rows.keys()
    wrong = {k: (got[k], truth.rows[k]) for k in truth.rows.keys() & got.keys() if got[k] != truth.rows[k]}
    assert not missing and not extra and not wrong, (
        f"{len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong rows, e.g. {list(wrong.items())[:3]}"
    )
    positions = p.positions()
    assert {q: positions[q][0] for q in ends if ends[q]} == {q: e for q, e in ends.items() if e}
    assert sum(v[1] for v in positions.values()) == truth.late


def free_ports(count: int) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1 (a broker and its controller)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} consecutive free ports")
