"""Fixtures shared by all tests: the real Kafka broker, a real PostgreSQL, a real schema registry,
a real AWS Glue API (moto's server), and a guard against logged errors."""

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from consumer.dev import kafka as devkafka
from consumer.dev import postgres as devpostgres
from consumer.dev import registry as devregistry

# Under pytest-xdist (make test runs -n 2), worker gwN starts a broker and a registry of its own,
# N * 100 ports above the base (a broker takes P, P+1 for its controller and P+2 for SASL_SSL).
XDIST_OFFSET = 100 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_KAFKA_PORT = int(os.environ.get("EVENTFLEET_TEST_KAFKA_PORT", "19092")) + XDIST_OFFSET
TEST_REGISTRY_PORT = int(os.environ.get("EVENTFLEET_TEST_REGISTRY_PORT", "18081")) + XDIST_OFFSET  # mgmt: +1000


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


@pytest.fixture(scope="session")
def glue_server() -> Iterator[str]:
    """moto's server mode: a real HTTP server speaking AWS Glue's API (schema registry included),
    on 127.0.0.1 and a free port, for the session. Yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def glue_endpoint(glue_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Glue endpoint, emptied of the previous test's registries and schemas, with fake AWS
    credentials and region in the environment (the SDK's default chain reads them)."""
    httpx.post(f"{glue_server}/moto-api/reset", timeout=10).raise_for_status()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata service
    return glue_server


@dataclass
class SchemaRegistry:
    """The test session's schema registry: its Confluent-compatible URL, and the server if the
    session started it (stopped and started again by tests of a registry outage; it keeps its
    schemas and their ids)."""

    url: str
    server: devregistry.Registry | None  # None: an external registry ($EVENTFLEET_TEST_REGISTRY_URL)

    def restartable(self) -> devregistry.Registry:
        """The server, for tests that stop and start it; skips when the registry is not ours."""
        if self.server is None:
            pytest.skip("EVENTFLEET_TEST_REGISTRY_URL points at a registry this test may not stop")
        return self.server

    def stop(self) -> None:
        """Stop the registry (SIGTERM): from now on its URL refuses connections."""
        self.restartable().down()

    def up(self) -> None:
        """Start it again with the same data; returns once it answers."""
        self.restartable().up()

    start = up


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchemaRegistry]:
    """A real schema registry: $EVENTFLEET_TEST_REGISTRY_URL (a Confluent-compatible API) if set,
    else a local Apicurio Registry started for the session on $EVENTFLEET_TEST_REGISTRY_PORT
    (default 18081) in a temp folder, stopped after it."""
    existing = os.environ.get("EVENTFLEET_TEST_REGISTRY_URL")
    if existing:
        yield SchemaRegistry(existing.rstrip("/"), None)
        return
    server = devregistry.Registry(tmp_path_factory.mktemp("registry"), TEST_REGISTRY_PORT)
    try:
        server.up()
        yield SchemaRegistry(server.url, server)
    finally:
        server.down()


@pytest.fixture(scope="session")
def registry_url(registry_server: SchemaRegistry) -> str:
    """The Confluent-compatible URL of the session's registry, e.g. http://127.0.0.1:18081/apis/ccompat/v7."""
    return registry_server.url


@pytest.fixture(autouse=True)
def no_logged_errors(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose in-process code logged an error it did not expect (callbacks included)."""
    yield
    if request.node.get_closest_marker("allow_logged_errors"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "unexpected errors logged:\n" + "\n".join(r.getMessage() for r in errors)
