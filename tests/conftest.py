"""Fixtures shared by all tests: the real Kafka broker, a real PostgreSQL, and a guard against
logged errors."""

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from consumer import devkafka, devpostgres

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


@dataclass
class Postgres:
    """The test session's PostgreSQL: where to connect, and the server if the session started it."""

    dsn: str
    server: devpostgres.Server | None  # None: an external server ($EVENTFLEET_TEST_PG_DSN)

    def restartable(self) -> devpostgres.Server:
        """The server, for tests that stop and start it; skips when the server is not ours."""
        if self.server is None:
            pytest.skip("EVENTFLEET_TEST_PG_DSN points at a server this test may not restart")
        return self.server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL: $EVENTFLEET_TEST_PG_DSN if set, else a throwaway cluster (initdb in a
    temp folder, pg_ctl on 127.0.0.1 and a free port, fsync off), removed after the session."""
    existing = os.environ.get("EVENTFLEET_TEST_PG_DSN")
    if existing:
        yield Postgres(existing, None)
        return
    server = devpostgres.Server.temporary(fsync=False)
    try:
        server.up()
        yield Postgres(server.dsn, server)
    finally:
        server.remove()


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose in-process code logged an error it did not expect (callbacks included)."""
    yield
    if request.node.get_closest_marker("allow_logged_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "unexpected errors logged:\n" + "\n".join(r.getMessage() for r in errors)
