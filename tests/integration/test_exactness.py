"""Exactly-once results through normal runs, crashes, rebalances and restarts (real broker)."""

import os
import signal
import time

import pytest

from .conftest import Kafka, assert_exact, generate, ground_truth, run_through_kills, wait_for
from .test_fleet import _free_port, _get, _metric

pytestmark = pytest.mark.integration


def test_two_workers_aggregate_exactly(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=8)
    events = generate(200_000, 8, seed=1)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    assert sum(ends.values()) == 200_000
    p.start_worker()
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0, 0]
    truth = ground_truth(events)
    assert truth.late > 100  # the stream really exercises lateness
    assert_exact(p, truth, ends)
    # the Kafka offsets were committed after the sink (lag tools see true progress)
    assert kafka.committed(p.topic, p.group, 8) == ends


@pytest.mark.parametrize("fault", ["before_sink_write@3", "in_sink_transaction@3", "after_sink_commit@3"])
def test_crash_at_each_flush_step_is_exact(kafka: Kafka, pipeline, fault: str) -> None:
    """SIGKILL inside the flush protocol (armed by EVENTFLEET_FAULT), then restart."""
    p = pipeline(partitions=4, flush="300ms")
    events = generate(60_000, 4, seed=2)
    producing = kafka.produce_in_background(p.topic, events, 6.0)
    doomed = p.start_worker(fault=fault)
    assert doomed.wait(60) == -signal.SIGKILL, p.logs()[-3000:]  # killed by the armed fault, at that step
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)


def test_sigkill_mid_stream_and_between_flushes_is_exact(kafka: Kafka, pipeline) -> None:
    """Two workers while events flow; one is SIGKILLed at several moments and restarted."""
    p = pipeline(partitions=8, flush="700ms")
    events = generate(200_000, 8, seed=3)
    ends = run_through_kills(kafka, p, events, 20.0, (1.3, 2.9, 2.2), partitions=8)
    assert_exact(p, ground_truth(events), ends)


def test_frozen_worker_past_its_session_is_exact(kafka: Kafka, pipeline) -> None:
    """A worker frozen (SIGSTOP) past its session timeout while holding unflushed partials;
    its partitions move; when it thaws it must not write them (lost, or fenced by the group
    coordinator refusing its transaction's offsets: the kafka sink). The same with a database
    sink (fenced by the positions' compare-and-set) is driven deterministically in
    tests/test_worker_driven.py, and against the broker by the stalled worker below."""
    p = pipeline(partitions=4, flush="2s", sink="kafka")
    events = generate(80_000, 4, seed=5)
    producing = kafka.produce_in_background(p.topic, events, 14.0)
    port = _free_port()
    zombie = p.start_worker(metrics_port=port)
    wait_for(lambda: len(p.positions()) == 4, 60)  # it owns every partition and has flushed
    consumed = _scrape(port, "eventfleet_events_consumed_total")
    wait_for(lambda: _scrape(port, "eventfleet_events_consumed_total") > consumed, 30, "unflushed events")
    os.kill(zombie.pid, signal.SIGSTOP)  # mid-interval (2 s): it holds partials
    frozen = p.positions()
    p.start_worker()
    # past session.timeout.ms the group gives every partition to the new worker, which flushes them
    wait_for(lambda: all(p.positions()[q][0] > frozen[q][0] for q in frozen), 90, "the new owner's flushes")
    os.kill(zombie.pid, signal.SIGCONT)
    # the zombie learns it lost them, or its flush fails (the compare-and-set, the group coordinator)
    wait_for(lambda: _fenced(port) > 0, 60, "the zombie to be fenced")
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    p.stop_all()
    assert_exact(p, ground_truth(events), ends)


def test_worker_stalled_in_a_flush_is_fenced_by_the_sink(kafka: Kafka, pipeline) -> None:
    """A worker stuck just before its sink write past max.poll.interval.ms: the group moves its
    partitions and the new owner writes; the stalled write must fail its compare-and-set."""
    p = pipeline(partitions=4, flush="500ms", extra='"max.poll.interval.ms" = 7000')
    events = generate(80_000, 4, seed=8)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    port = _free_port()
    stalled = p.start_worker(fault="before_sink_write@4:sleep=14", metrics_port=port)
    wait_for(lambda: "EVENTFLEET_FAULT: stalling" in p.logs(), 60)
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    wait_for(lambda: _scrape(port, "eventfleet_flushes_total", 'outcome="conflict"') > 0, 30, "the rolled-back flush")
    p.stop_all()
    assert stalled.returncode == 0
    assert_exact(p, ground_truth(events), ends)


def test_restart_after_the_end_processes_nothing_twice(kafka: Kafka, pipeline) -> None:
    """A restart once everything is flushed starts at the sink's positions: it reads only what
    came after (counted by its own metric), and the results stay exact."""
    p = pipeline(partitions=8)
    events = generate(50_000, 8, seed=6)
    kafka.produce(p.topic, events[:40_000])
    p.start_worker()
    p.wait_caught_up(kafka.ends(p.topic))
    assert p.stop_all() == [0]
    port = _free_port()
    p.start_worker(metrics_port=port)
    wait_for(lambda: _scrape(port, "eventfleet_assigned_partitions") == 8, 60, "the restarted worker's assignment")
    kafka.produce(p.topic, events[40_000:])
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)  # it read and flushed the new events: it was fetching every partition
    assert _scrape(port, "eventfleet_events_consumed_total") == 10_000  # and nothing before them
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)


def test_undecodable_messages_go_to_the_dead_letter_topic(kafka: Kafka, pipeline) -> None:
    import sqlite3

    from confluent_kafka import Consumer, TopicPartition

    from .conftest import TABLE, encode

    p = pipeline(partitions=2)
    good = generate(4_000, 2, seed=7)
    valid = encode(good[0][1])
    poison = [b"", b"\x00garbage\xff" * 3, valid[:-3], valid + b"\x01\x02", b"\x02\x80"]
    events = list(good)
    for i, value in enumerate(poison):
        events.insert(500 * (i + 1), (i % 2, value))
    kafka.produce(p.topic, events)
    expected = {}  # (partition, offset) of each poison message, from the produce order
    offsets = {0: 0, 1: 0}
    for partition, value in events:
        if isinstance(value, bytes):
            expected[(partition, offsets[partition])] = value
        offsets[partition] += 1
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)

    # every poison message is in the dead-letter topic, whole, with headers naming its origin
    dlq = f"{p.topic}.dlq"
    reader = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False})
    reader.assign([TopicPartition(dlq, q, 0) for q in kafka.ends(dlq)])
    letters = []
    deadline = time.monotonic() + 30
    while len(letters) < len(poison) and time.monotonic() < deadline:
        letters += [m for m in reader.consume(100, 1.0) if m.error() is None]
    reader.close()
    got = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["eventfleet.source.topic"] == p.topic
        assert h["eventfleet.error"]
        assert int(h["eventfleet.source.timestamp"]) > 0
        got[(int(h["eventfleet.source.partition"]), int(h["eventfleet.source.offset"]))] = m.value() or b""
    assert got == expected
    with sqlite3.connect(p.db) as db:
        (rejects,) = db.execute(f"SELECT count(*) FROM {TABLE}_rejects").fetchone()
    assert rejects == len(poison)
    assert sum(v[2] for v in p.positions().values()) == len(poison)


def test_a_flood_of_invalid_messages_stops_the_worker(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=1, sections="[dlq]\nmax_consecutive = 50")
    events = generate(1_000, 1, seed=9) + [(0, b"\xff\xff\xff")] * 200  # a bad deploy upstream
    kafka.produce(p.topic, events)
    worker = p.start_worker()
    assert worker.wait(60) == 2
    assert "dlq.max_consecutive = 50" in p.logs()  # the one line that names the setting to change
    assert sum(v[2] for v in p.positions().values()) < 200  # it stopped before passing the flood


def _scrape(port: int, name: str, labels: str = "") -> float:
    """A worker's metric, summed over its label sets (0 while it does not answer yet)."""
    try:
        return _metric(_get(port, "/metrics")[1], name, labels)
    except OSError:
        return 0.0


def _fenced(port: int) -> float:
    """How often a worker learned that it had lost its partitions or that its flush was refused."""
    return _scrape(port, "eventfleet_rebalances_total", 'kind="lost"') + _scrape(
        port, "eventfleet_flushes_total", 'outcome="conflict"'
    )
