"""Fixtures shared by all tests: the real Kafka broker and a guard against logged errors."""

import logging
import os
from collections.abc import Iterator

import pytest

from consumer import devkafka

TEST_KAFKA_PORT = int(os.environ.get("EVENTFLEET_TEST_KAFKA_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: $KAFKA_BOOTSTRAP_SERVERS if set, else a local one started for the session."""
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    broker = devkafka.Broker(tmp_path_factory.mktemp("kafka"), TEST_KAFKA_PORT)
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down()


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose in-process code logged an error it did not expect (callbacks included)."""
    yield
    if request.node.get_closest_marker("allow_logged_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "unexpected errors logged:\n" + "\n".join(r.getMessage() for r in errors)
