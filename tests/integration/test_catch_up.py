"""Catching up: a backlog is flushed as soon as the worker has read it all, while events that
arrive as they are written wait for the flush interval."""

import time
from typing import Any

import pytest
from confluent_kafka import Producer

from .conftest import Kafka, assert_exact, encode, generate, ground_truth, wait_for
from .test_fleet import _free_port, _get, _metric

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _produce_written_at(kafka: Kafka, topic: str, events: list[tuple[int, dict[str, Any]]], ts_ms: int) -> None:
    """Produce with this Kafka timestamp (CreateTime), as if the events had waited in the topic since."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for partition, record in events:
        while True:
            try:
                producer.produce(topic, encode(record), partition=partition, timestamp=ts_ms)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _consumed(port: int) -> float:
    try:
        return _metric(_get(port, "/metrics")[1], "eventfleet_events_consumed_total")
    except OSError:  # the supervisor is still starting
        return 0.0


def test_a_backlog_is_flushed_once_read_and_fresh_events_wait_for_the_interval(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4, flush="10m")
    fresh = generate(20_000, 4, seed=31)
    kafka.produce(p.topic, fresh)  # written now: the worker is not behind
    port = _free_port()
    fleet = p.start_fleet(workers=1, metrics_port=port)
    wait_for(lambda: _consumed(port) >= len(fresh), 60, "the worker to read the fresh events")
    time.sleep(3)
    assert p.positions() == {}, "fresh events were flushed before the 10-minute interval"

    backlog = generate(30_000, 4, seed=32)
    _produce_written_at(kafka, p.topic, backlog, int(time.time() * 1000) - HOUR_MS)
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends, timeout_s=60)  # long before the interval: flushed once caught up
    assert_exact(p, ground_truth(fresh + backlog), ends)  # type: ignore[arg-type]
    assert p.fleet_log().count("caught up with the backlog: flushing now") == 1
    assert p.stop(fleet) == 0
