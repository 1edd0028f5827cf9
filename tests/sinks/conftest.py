"""The sinks under test, one :class:`Target` per sink type: how to write its pipeline, open it,
and read back what it committed through another client. The contract suite is parametrized over
them (``any_target``: every sink; ``sql_target``: the sinks that keep their positions in their
own tables and compare-and-set them; the kafka sink needs the test session's broker)."""

import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from consumer.config import Pipeline, load
from consumer.sinks import Sink, open_sink
from consumer.sinks.sql import TABLE_SUFFIXES
from consumer.types import Position

SCHEMA = Path(__file__).parents[2] / "schemas" / "ad_event.avsc"
SIZE = 60_000  # the window, ms
METRICS = {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "hi": "max:price_micros"}
PARTITIONS = 4  # of the source topic (the kafka sink writes positions of partitions it is assigned)
SQL_SINKS = ("sqlite", "postgres")
EVERY_SINK = (*SQL_SINKS, pytest.param("kafka", marks=pytest.mark.integration))


@dataclass
class Target:
    """One sink type under test, with fresh tables (or topics) of its own."""

    kind: str
    folder: Path
    table: str
    group: str
    dsn: str | None = None  # postgres
    bootstrap: str | None = None  # kafka
    topic: str = "ad-events"
    opened: list[Sink] = field(default_factory=list)
    consumers: list[Consumer] = field(default_factory=list)  # readers outside the group's membership
    members: list[Consumer] = field(default_factory=list)  # the group's member (the kafka sink's)

    def pipeline(
        self, metrics: dict[str, str] | None = None, size: str = "1m", name: str = "pipeline.toml"
    ) -> Pipeline:
        sink: dict[str, Any] = {"type": self.kind, "table": self.table}
        if self.kind == "sqlite":
            sink["path"] = "sink.db"
        elif self.kind == "postgres":
            sink["dsn"] = self.dsn
        else:
            sink = {"type": "kafka", "topic": f"{self.topic}.out", "config": {"transaction.timeout.ms": 10000}}
        doc = {
            "kafka": {"bootstrap_servers": self.bootstrap or "127.0.0.1:9092", "topics": [self.topic],
                      "group_id": self.group},
            "schema": {"path": str(SCHEMA)},
            "window": {"size": size, "grace": "10s", "time_field": "ts"},
            "aggregate": {"group_by": ["campaign_id", "event_type"], "metrics": metrics or METRICS},
            "sink": sink,
        }  # fmt: skip
        path = self.folder / name
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
        return load(path)

    def open(self, pipeline: Pipeline | None = None) -> Sink:
        """The sink as a worker opens it (the kafka sink: with a consumer assigned the topic's
        partitions, a member of the group); closed at the end of the test."""
        sink = open_sink(pipeline or self.pipeline())
        self.opened.append(sink)
        if sink.positions_in_kafka:
            sink.use_consumer(self._member())
        return sink

    def _member(self) -> Consumer:
        """A new member of the group, once the previous one (a worker that stopped) has left."""
        assert self.bootstrap is not None
        for old in self.members:
            old.close()
        self.members.clear()
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                             "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
        self.members.append(consumer)
        consumer.subscribe([self.topic])
        deadline = time.monotonic() + 60
        while len(consumer.assignment()) < PARTITIONS:  # waits on the group's state, not on time
            assert time.monotonic() < deadline, "the consumer was not assigned the topic's partitions"
            consumer.poll(0.2)
        return consumer

    def partials(self, partials: dict[tuple[Any, ...], list[int]], partition: int = 0) -> dict[Any, list[int]]:
        """Partials in the shape the sink asks for (``partials_by_partition``: the window start
        becomes (window start, topic, partition))."""
        if self.kind != "kafka":
            return partials
        return {((k[0], self.topic, partition), *k[1:]): v for k, v in partials.items()}

    def rows(self) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The aggregates another client sees committed: a sink opened apart, or the database's own client."""
        if self.kind == "kafka":
            sink = open_sink(self.pipeline(name="reader.toml"))
            try:
                rows = sink.results()[1]
            finally:
                sink.close()
        else:
            rows = self.query(f'SELECT * FROM "{self.table}"')
        return {(r[0], r[2], r[3]): (r[1], *r[4:]) for r in rows}

    def positions(self, partitions: list[int]) -> dict[int, Position]:
        """The positions another client reads (the kafka sink: the group's committed offsets, read by
        a consumer outside the group's membership)."""
        sink = open_sink(self.pipeline(name="reader.toml"))
        try:
            if self.kind == "kafka":
                assert self.bootstrap is not None
                reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
                self.consumers.append(reader)
                sink.use_consumer(reader)
            found = sink.read_positions(self.group, [(self.topic, p) for p in partitions])
        finally:
            sink.close()
        return {p: pos for (_, p), pos in found.items()}

    def pos(self, partition: int, offset: int, watermark: int = 0, late: int = 0, invalid: int = 0) -> Position:
        return Position(self.topic, partition, offset, watermark, late, invalid)

    def query(self, query: str) -> list[tuple[Any, ...]]:
        """Rows read with the database's own client (SQL sinks)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.folder / "sink.db") as db:
                return db.execute(query).fetchall()
        with psycopg.connect(self.dsn or "") as pg:
            return pg.execute(query).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        for sink in self.opened:
            sink.close()
        for consumer in [*self.members, *self.consumers]:
            consumer.close()


def _make(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    table = f"t_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        target = Target(kind, tmp_path, table, "g")
    elif kind == "postgres":
        target = Target(kind, tmp_path, table, "g", dsn=request.getfixturevalue("postgres").dsn)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        topic = f"contract-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
            future.result(30)
        target = Target(kind, tmp_path, table, f"g-{topic}", bootstrap=bootstrap, topic=topic)
    try:
        yield target
    finally:
        target.close()
        if kind == "postgres":
            with psycopg.connect(target.dsn or "", autocommit=True) as db:
                for name in (table, f"{table}_sh"):
                    for suffix in TABLE_SUFFIXES:
                        db.execute(f'DROP TABLE IF EXISTS "{name}{suffix}"')  # type: ignore[arg-type]


@pytest.fixture(params=EVERY_SINK)
def any_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from _make(str(request.param), tmp_path, request)


@pytest.fixture(params=SQL_SINKS)
def sql_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from _make(str(request.param), tmp_path, request)


@pytest.fixture
def pg_target(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _make("postgres", tmp_path, request)
