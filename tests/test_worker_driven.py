"""The worker driven step by step, without a broker: the flush protocol's cases, deterministically.

Each test runs real workers (the real hot loop, decoder, flush protocol and SQLite sink in a tmp
folder) on an in-memory consumer and a clock moved by hand (consumer/testing.py); the test plays
the group coordinator. Results are compared with the ground truth computed in plain Python over
the generated events (tests/integration/conftest.py), and with the sink's positions, the
offsets committed to the in-memory broker, the sources' state and the workers' own metrics,
never with log text. docs/design.md gives the rules checked here.
"""

import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from prometheus_client import CollectorRegistry

from consumer.config import load
from consumer.metrics import WorkerMetrics
from consumer.protocol import EXIT_FENCED
from consumer.replay import ReplayEnd
from consumer.sinks import open_sink
from consumer.testing import LocalBroker, LocalRegistry, LocalSource, MockedClock
from consumer.worker import Worker

from .integration.conftest import (
    GRACE_MS,
    SCHEMA_PATH,
    TABLE,
    WINDOW_MS,
    Pipeline,
    assert_exact,
    generate,
    ground_truth,
)

TOPIC = "events"
GROUP = "g-driven"
FLUSH_S = 1.0


def _writer_schema() -> Any:
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["fields"][1]["type"] = "long"  # same bytes as timestamp-millis
    return parse_schema(schema)


WRITER = _writer_schema()


def encode(record: dict[str, Any]) -> bytes:
    """The event's Avro bytes (the integration suite's encoding, with the schema parsed once)."""
    buf = io.BytesIO()
    schemaless_writer(buf, WRITER, record)
    return buf.getvalue()


@dataclass
class Member:
    """One worker of the group and what the test reads of it."""

    worker: Worker
    source: LocalSource
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def steps(self, n: int = 1) -> None:
        for _ in range(n):
            self.worker.step()


@dataclass
class Rig:
    """An in-memory topic, a clock, a pipeline writing to SQLite in a tmp folder, and its workers."""

    tmp: Path
    partitions: int = 4
    clock: MockedClock = field(default_factory=MockedClock)
    events: list[tuple[int, Any]] = field(default_factory=list)  # as produced, for the ground truth
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.broker = LocalBroker(self.clock)
        self.broker.create_topic(TOPIC, self.partitions)
        self.db = self.tmp / "stats.db"
        self.path = self.tmp / "pipeline.toml"
        self.interval = FLUSH_S

    def write_pipeline(
        self, flush: str = f"{int(FLUSH_S * 1000)}ms", registry: bool = False, step_ms: int = WINDOW_MS
    ) -> None:
        """``registry``: values framed by a schema registry (the rig's ``registry``, in memory);
        ``step_ms``: hopping windows of WINDOW_MS starting every step_ms (default: tumbling)."""
        self.registry = LocalRegistry() if registry else None
        self.step_ms = step_ms
        self.path.write_text(f"""
[kafka]
bootstrap_servers = "127.0.0.1:9"
topics = ["{TOPIC}"]
group_id = "{GROUP}"
[schema]
path = "{SCHEMA_PATH}"
{'registry = "http://127.0.0.1:9"' if registry else ""}
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
[sink]
type = "sqlite"
path = "{self.db}"
table = "{TABLE}"
[flush]
interval = "{flush}"
[dlq]
enabled = false
""")

    def member(self, fetch_max: int | None = None) -> Member:
        """A new worker, started (subscribed) but given nothing yet."""
        pipeline = load(self.path)
        registry = CollectorRegistry()
        source = LocalSource(self.broker, GROUP, fetch_max=fetch_max)
        worker = Worker(pipeline, source, open_sink(pipeline), self.clock, WorkerMetrics(registry),
                        registry=self.registry)  # fmt: skip
        worker.start()
        m = Member(worker, source, registry)
        self.members.append(m)
        return m

    def produce(self, events: list[tuple[int, Any]], written_ms: int | None = None, schema_id: int = 0) -> None:
        """Each event to its partition; ``schema_id``: framed for the registry, with that id."""
        for p, r in events:
            value = r if isinstance(r, bytes) else encode(r)
            if schema_id:
                assert self.registry is not None
                value = self.registry.frame(schema_id, value)
            self.broker.produce(TOPIC, p, value, written_ms)
        self.events += events

    def all(self) -> list[tuple[str, int]]:
        return [(TOPIC, p) for p in range(self.partitions)]

    def view(self) -> Pipeline:
        """The integration suite's reader of the sink (rows, positions): the same queries."""
        return Pipeline(self.path, self.db, TOPIC, GROUP, self.tmp)

    def positions(self) -> dict[int, int]:
        return {q: v[0] for q, v in self.view().positions().items()}

    def assert_exact(self) -> None:
        assert_exact(self.view(), ground_truth(self.events, self.step_ms), self.broker.ends(TOPIC))

    def flush_all(self) -> None:
        """Let a flush interval pass and every worker take its turn."""
        self.clock.advance(self.interval)
        for m in self.members:
            if not m.worker.stopping:
                m.steps()

    def close(self) -> None:
        for m in self.members:
            if not m.source.closed:
                m.worker.sink.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    r.write_pipeline()
    yield r
    r.close()


def test_a_flush_comes_with_the_interval_and_commits_after_the_sink(rig: Rig) -> None:
    rig.produce(generate(600, 4, seed=1))
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()  # the assignment, then the whole topic in one batch
    assert a.worker.events == 600
    rig.clock.advance(FLUSH_S * 0.99)
    a.steps()
    assert rig.positions() == {} and rig.broker.committed == {}  # not due yet: nothing written
    rig.clock.advance(FLUSH_S * 0.01)
    a.steps()
    rig.assert_exact()
    assert rig.broker.group_offsets(GROUP, TOPIC) == rig.broker.ends(TOPIC)  # then Kafka, the same offsets
    assert a.metric("eventfleet_flushes_total", outcome="ok") == 1
    assert a.metric("eventfleet_kafka_commits_total", outcome="ok") == 1
    assert a.metric("eventfleet_events_consumed_total") == 600
    assert ground_truth(rig.events).late > 0  # the stream exercises lateness
    assert a.metric("eventfleet_events_late_total", topic=TOPIC, partition="0") > 0


def test_a_failed_kafka_commit_is_retried_at_the_next_flush_and_the_sink_holds_the_positions(rig: Rig) -> None:
    rig.produce(generate(400, 4, seed=2))
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.source.fail_commits = True
    a.steps()
    rig.flush_all()
    rig.assert_exact()  # the sink is the source of truth
    assert rig.broker.committed == {}
    assert a.metric("eventfleet_kafka_commits_total", outcome="failed") == 1
    a.source.fail_commits = False
    rig.flush_all()  # nothing new read: only the commit left behind
    assert rig.broker.group_offsets(GROUP, TOPIC) == rig.broker.ends(TOPIC)


def test_revoke_flushes_before_the_partitions_are_handed_over(rig: Rig) -> None:
    events = generate(1_200, 4, seed=3)
    rig.produce(events[:600])
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    assert rig.positions() == {}  # partials of every partition in memory, unflushed
    b = rig.member()
    moved = [(TOPIC, 2), (TOPIC, 3)]
    a.source.rebalance(revoke=moved)  # cooperative: a gives up half, b gets them
    a.steps()
    assert rig.positions() == {q: e for q, e in rig.broker.ends(TOPIC).items()}  # flushed in the callback
    assert a.source.assignment() == [(TOPIC, 0), (TOPIC, 1)]
    b.source.rebalance(assign=moved)
    b.steps()
    assert b.worker.events == 0  # b starts where a's flush left them: nothing read twice
    rig.produce(events[600:])
    a.steps()
    b.steps()
    assert a.worker.events + b.worker.events == 1_200
    rig.flush_all()
    rig.assert_exact()


def test_lost_partitions_are_never_flushed_and_the_rest_is_rewound(rig: Rig) -> None:
    events = generate(800, 4, seed=4)
    rig.produce(events[:400])
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    rig.flush_all()
    flushed = rig.positions()
    assert flushed == rig.broker.ends(TOPIC)
    rig.produce(events[400:])
    a.steps()  # unflushed partials of every partition
    assert a.worker.state.partials and a.worker.events == 800
    lost = [(TOPIC, 0), (TOPIC, 1)]
    a.source.rebalance(lost=lost)  # its session expired: another member may own them already
    a.steps()
    assert rig.positions() == flushed  # nothing of the lost partitions' partials reached the sink
    assert set(a.worker.state.parts) == {(TOPIC, 2), (TOPIC, 3)}
    # partials are merged across partitions: all were dropped, and the partitions kept were read
    # again from the sink's positions (in the same poll): their 100 unflushed events each
    assert a.worker.events == 800 + 2 * 100
    b = rig.member()
    b.source.rebalance(assign=lost)
    b.steps()
    rig.flush_all()
    rig.assert_exact()
    assert a.metric("eventfleet_rebalances_total", kind="lost") == 1


def test_hopping_windows_through_a_revoke_and_a_lost_assignment(rig: Rig) -> None:
    """10 s windows every 2 s: each event in five windows, some late for their oldest windows
    only. A revoke flushes the partials of every window, a lost assignment drops them, and the
    results and the late (event, window) pairs stay exact."""
    step = 2_000
    rig.write_pipeline(step_ms=step)
    events = generate(2_400, 4, seed=41)
    truth = ground_truth(events, step)
    assert truth.partly_late > 5 and truth.late > truth.partly_late  # some windows only, and all of them
    rig.produce(events[:800])
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    assert rig.positions() == {}
    b = rig.member()
    moved = [(TOPIC, 2), (TOPIC, 3)]
    a.source.rebalance(revoke=moved)
    a.steps()
    flushed = rig.positions()
    assert flushed == rig.broker.ends(TOPIC)  # every window's partials flushed in the callback
    b.source.rebalance(assign=moved)
    b.steps()
    assert b.worker.events == 0
    rig.produce(events[800:1_600])
    a.steps()
    b.steps()
    assert a.worker.state.partials and b.worker.state.partials  # unflushed, in both
    lost = [(TOPIC, 0)]
    a.source.rebalance(lost=lost)
    a.steps()
    assert rig.positions()[0] == flushed[0]  # nothing of the lost partition reached the sink
    b.source.rebalance(assign=lost)
    b.steps()
    rig.produce(events[1_600:])
    a.steps()
    b.steps()
    rig.flush_all()
    rig.assert_exact()
    late = [m.metric("eventfleet_events_late_total", topic=TOPIC, partition=str(q)) for m in (a, b) for q in range(4)]
    assert sum(late) == truth.late  # counted once each, when durable: the lost partition's by its new owner


def test_a_sink_outage_pauses_the_partitions_then_resumes_with_nothing_lost_or_doubled(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("consumer.sinks.sqlite.BUSY_TIMEOUT_S", 0.001)  # a locked file fails at once
    events = generate(1_200, 4, seed=5)
    rig.produce(events[:400])
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    rig.flush_all()
    before = rig.positions()
    rig.produce(events[400:800])
    a.steps()
    lock = sqlite3.connect(rig.db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every write fails with 'database is locked'; readers still read
    try:
        rig.flush_all()
        assert sorted(a.source.paused) == rig.all()
        assert a.metric("eventfleet_paused_partitions") == 4
        assert a.metric("eventfleet_sink_failures_total") == 1
        read = a.worker.events
        rig.produce(events[800:])
        for _ in range(5):  # events keep arriving; the paused partitions are not read
            rig.flush_all()
        assert a.worker.events == read
        assert rig.positions() == before
        assert a.metric("eventfleet_sink_outage_seconds") > 0
    finally:
        lock.execute("COMMIT")
        lock.close()
    for _ in range(10):  # the next retry, at most SINK_RETRY_MAX_S later
        if not a.source.paused:
            break
        rig.clock.advance(5.0)
        a.steps()
    assert not a.source.paused and a.metric("eventfleet_paused_partitions") == 0
    assert a.metric("eventfleet_sink_outage_seconds") == 0
    a.steps()
    rig.flush_all()
    rig.assert_exact()


def test_a_revoke_during_a_sink_outage_drops_every_partial_and_the_new_owner_reads_them_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("consumer.sinks.sqlite.BUSY_TIMEOUT_S", 0.001)
    events = generate(800, 4, seed=6)
    rig.produce(events[:400])
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    rig.flush_all()
    rig.produce(events[400:])
    a.steps()
    b = rig.member()
    moved = [(TOPIC, 2), (TOPIC, 3)]
    lock = sqlite3.connect(rig.db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        a.source.rebalance(revoke=moved)
        a.steps()  # cannot flush before handing over: drops its partials, rewinds the partitions kept
        assert a.worker.state.partials == {}
        assert sorted(a.source.paused) == [(TOPIC, 0), (TOPIC, 1)]
        b.source.rebalance(assign=moved)
        b.steps()  # the positions can be read: b takes them, and pauses at its first failed flush
        rig.flush_all()
        assert sorted(b.source.paused) == moved
    finally:
        lock.execute("COMMIT")
        lock.close()
    for _ in range(10):
        if not (a.source.paused or b.source.paused):
            break
        rig.flush_all()
        rig.clock.advance(5.0)
    a.steps()
    b.steps()
    rig.flush_all()
    rig.assert_exact()


def test_a_backlog_is_flushed_once_read_and_fresh_events_wait_for_the_interval(rig: Rig) -> None:
    rig.write_pipeline(flush="10m")
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    rig.produce(generate(400, 4, seed=7))  # written now: not behind
    a.steps(3)
    assert a.worker.events == 400 and rig.positions() == {}
    hour_ago = int((rig.clock.time() - 3_600) * 1000)
    rig.produce(generate(600, 4, seed=8, start_ms=1_800_000_100_000), written_ms=hour_ago)
    a.steps()  # the backlog and every partition's end in one batch: caught up, flushed without waiting
    rig.assert_exact()
    assert rig.clock.monotonic() == 0  # no time passed
    rig.produce(generate(200, 4, seed=9, start_ms=1_800_000_200_000))  # fresh again
    a.steps(3)
    assert rig.positions() != rig.broker.ends(TOPIC)  # waits for the 10-minute interval
    rig.clock.advance(600)
    a.steps()
    rig.assert_exact()


def test_a_backlog_read_in_several_batches_is_flushed_at_the_end_only(rig: Rig) -> None:
    rig.write_pipeline(flush="10m")
    a = rig.member(fetch_max=20)
    a.source.rebalance(assign=rig.all())
    hour_ago = int((rig.clock.time() - 3_600) * 1000)
    rig.produce(generate(800, 4, seed=10), written_ms=hour_ago)
    a.steps()
    assert a.worker.behind and rig.positions() == {}  # behind, not at the end yet
    flushes = 0
    for _ in range(20):
        a.steps()
        flushes = int(a.metric("eventfleet_flushes_total", outcome="ok"))
        if flushes:
            break
    assert flushes == 1
    rig.assert_exact()


def test_a_frozen_worker_s_flush_is_rolled_back_by_the_compare_and_set(rig: Rig) -> None:
    """The zombie: frozen past its session with unflushed partials, its partitions moved without
    it knowing; when it thaws, its flush must fail the positions' compare-and-set."""
    events = generate(1_200, 4, seed=11)
    rig.produce(events[:400])
    zombie = rig.member()
    zombie.source.rebalance(assign=rig.all())
    zombie.steps()
    rig.flush_all()
    rig.produce(events[400:800])
    zombie.steps()  # holds partials, then freezes (no more steps)
    owner = rig.member()
    owner.source.rebalance(assign=rig.all())
    owner.steps()
    rig.clock.advance(FLUSH_S)
    owner.steps()  # the rightful owner flushed
    owned = rig.positions()
    assert owned == rig.broker.ends(TOPIC)
    rig.produce(events[800:])
    zombie.steps()  # thaws: its flush is due
    assert zombie.metric("eventfleet_flushes_total", outcome="conflict") == 1
    assert zombie.worker.state.partials == {}  # discarded, and its partitions sought to the sink's positions
    zombie.source.rebalance(lost=rig.all())  # then the group tells it
    zombie.steps()
    assert zombie.worker.state.parts == {}
    owner.steps()
    rig.flush_all()
    rig.assert_exact()


@pytest.mark.allow_logged_errors  # the worker logs its fencing as an error
def test_a_fenced_member_stops_without_flushing(rig: Rig) -> None:
    rig.produce(generate(200, 4, seed=12))
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    a.source.fence()
    a.steps()
    assert a.worker.stopping and a.worker.fenced
    assert a.worker.finish() == EXIT_FENCED
    assert rig.positions() == {} and rig.broker.committed == {}  # the member that fenced it owns them now
    assert a.source.closed and not a.source.left  # a static member does not leave for its twin


def test_shutdown_flushes_commits_and_leaves_then_a_restart_reads_nothing_twice(rig: Rig) -> None:
    rig.produce(generate(600, 4, seed=13))
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    a.worker.stop()  # SIGTERM mid-interval
    assert a.worker.finish() == 0
    rig.assert_exact()
    assert rig.broker.group_offsets(GROUP, TOPIC) == rig.broker.ends(TOPIC)
    assert a.source.closed and a.source.left and a.source.assignment() == []
    before = rig.view().results()
    b = rig.member()
    b.source.rebalance(assign=rig.all())
    b.steps(3)
    assert sorted(b.worker.state.parts) == rig.all()  # it did get the partitions
    assert {tp: p.next_offset for tp, p in b.worker.state.parts.items()} == {
        (TOPIC, q): e for q, e in rig.broker.ends(TOPIC).items()
    }
    assert b.worker.events == 0
    b.worker.stop()
    assert b.worker.finish() == 0
    assert rig.view().results() == before


def test_a_worker_run_to_the_end_offsets_by_the_replay_hook(rig: Rig) -> None:
    rig.produce(generate(400, 4, seed=14))
    ends = {(TOPIC, q): e for q, e in rig.broker.ends(TOPIC).items()}
    progress: list[int] = []
    pipeline = load(rig.path)
    source = LocalSource(rig.broker, GROUP, fetch_max=10)
    end = ReplayEnd(ends, progress.append)
    worker = Worker(pipeline, source, open_sink(pipeline), rig.clock, WorkerMetrics(CollectorRegistry()),
                    after_batch=end)  # fmt: skip
    source.rebalance(assign=rig.all())
    assert worker.run() == 0  # stops by itself once every partition reached its end
    assert end.done and sum(progress) == 400
    rig.assert_exact()


def test_a_registry_outage_pauses_the_partitions_and_dead_letters_nothing(rig: Rig) -> None:
    rig.write_pipeline(registry=True)
    assert rig.registry is not None
    writer = json.loads(SCHEMA_PATH.read_text())
    writer["fields"][1]["type"] = "long"
    schema_id = rig.registry.register(f"{TOPIC}-value", writer)
    assert isinstance(schema_id, int)
    rig.produce(generate(800, 4, seed=16), schema_id=schema_id)
    rig.registry.down = True  # before the worker has seen the writer schema
    a = rig.member()
    a.source.rebalance(assign=rig.all())
    a.steps()
    assert sorted(a.source.paused) == rig.all() and a.metric("eventfleet_paused_partitions") == 4
    assert a.worker.state.rejects == [] and a.worker.state.partials == {}  # not the messages' fault
    for _ in range(5):  # retried with backoff while it stays down; nothing read, nothing flushed
        rig.flush_all()
    assert a.metric("eventfleet_registry_outage_seconds") > 0
    assert rig.positions() == {} or all(v == 0 for v in rig.positions().values())
    rig.registry.down = False
    for _ in range(10):
        if not a.source.paused:
            break
        rig.clock.advance(1.0)
        a.steps()
    assert not a.source.paused and a.metric("eventfleet_registry_outage_seconds") == 0
    a.steps()
    rig.flush_all()
    rig.assert_exact()
    assert sum(p.invalid_events for p in a.worker.state.parts.values()) == 0
