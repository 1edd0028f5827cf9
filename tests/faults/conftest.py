"""Fault tests: brokers killed, bounced and cut off from their quorum while a fleet runs, and a
broker that wants SASL_SSL. Each module starts its own local cluster (or secured broker) on
$EVENTFLEET_TEST_CLUSTER_PORT (default 19101..19103, controllers 19111.., SASL_SSL 19121..) and
its tests use the integration helpers (topics, numbered events, ground truth) against it.

Run with ``make test-faults`` (``pytest -m faults tests/faults``); the main suite skips them.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.dev import kafka as devkafka
from tests.integration.conftest import Pipeline, kafka, pipeline  # noqa: F401  (fixtures)

CLUSTER_PORT = int(os.environ.get("EVENTFLEET_TEST_CLUSTER_PORT", "19101"))
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.Cluster]:
    """Three KRaft nodes, replication factor 3, min.insync.replicas 2, for this module."""
    c = devkafka.Cluster(tmp_path_factory.mktemp("cluster"), CLUSTER_PORT)
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture(scope="module")
def kafka_bootstrap(cluster: devkafka.Cluster) -> str:
    """The integration helpers (kafka, pipeline) use the cluster."""
    return cluster.bootstrap


@pytest.fixture
def healthy(cluster: devkafka.Cluster) -> devkafka.Cluster:
    """The cluster with every broker running (a failed test may have left one down)."""
    cluster.up()
    return cluster


def dead_letters(bootstrap: str, topic: str) -> int:
    """How many records the dead-letter topic ``topic`` holds (0 if it does not exist)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-dlq-probe"})
    try:
        meta = c.list_topics(timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        total = 0
        for q in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


def wait_moving(p: Pipeline, timeout_s: float = 120) -> dict[int, int]:
    """Wait until the fleet has flushed a position on every partition it will read: mid-stream."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pos = p.positions()
        if pos and all(v[0] > 0 for v in pos.values()):
            return {q: v[0] for q, v in pos.items()}
        time.sleep(0.2)
    raise AssertionError(f"the fleet did not start moving: {p.positions()}\n{p.fleet_log()[-4000:]}")


def positions_now(p: Pipeline, timeout_s: float = 30) -> dict[int, int]:
    """The flushed position of every partition (waits while a transaction holds them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pos = p.positions()
        if pos:
            return {q: v[0] for q, v in pos.items()}
        time.sleep(0.1)
    raise AssertionError("the positions could not be read")


def seconds_to_progress(p: Pipeline, since: float, ends: dict[int, int], timeout_s: float = 180) -> float:
    """Wait until every partition's flushed position passed ``ends``, the log end offsets read
    just before the fault: all that was there, and something produced since, read and flushed
    through the cluster as the fault left it. Returns the seconds from ``since`` (a
    time.monotonic() taken at the fault). Printed by the tests as ``recovery:`` lines (pytest -s
    shows them): the figures of docs/operations.md."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = p.positions()
        if now and all(now.get(q, (0,))[0] > end for q, end in ends.items()):
            return time.monotonic() - since
        time.sleep(0.1)
    raise AssertionError(f"no progress on every partition within {timeout_s:.0f} s: {p.positions()} vs {ends}")


def restarts(p: Pipeline) -> int:
    """How many times the supervisor restarted a worker that exited on its own."""
    return p.fleet_log().count("exited with")
