"""A broker that wants SASL_SSL (SCRAM-SHA-512 over TLS), started by ``eventfleet kafka up
--security sasl-ssl``: the pipeline lines it prints run a fleet exactly; a wrong password, an
unknown user and a CA that did not sign the broker's certificate each stop start-up at once with
one line and exit 2."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.dev import kafka as devkafka

from ..integration.conftest import Kafka, assert_exact, generate, ground_truth

SECURE_PORT = int(os.environ.get("EVENTFLEET_TEST_SECURE_KAFKA_PORT", "19120"))  # SASL_SSL on port+2
REFUSAL_S = 30.0


def eventfleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "consumer", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The broker's plaintext bootstrap (for the tests' own clients) and the pipeline lines
    ``kafka up`` printed for the SASL_SSL listener."""
    home = tmp_path_factory.mktemp("secured")
    up = eventfleet("kafka", "up", "--security", "sasl-ssl", "--port", str(SECURE_PORT), "--dir", str(home))
    try:
        assert up.returncode == 0, up.stderr
        snippet = up.stdout.split("In the pipeline file:\n", 1)[1]
        assert snippet.startswith("[kafka]\n") and 'auth = "scram-sha-512"' in snippet and "ca_file" in snippet
        yield f"127.0.0.1:{SECURE_PORT}", snippet
    finally:
        devkafka.Broker(home, SECURE_PORT).down()


@pytest.fixture(scope="module")
def kafka_bootstrap(secured: tuple[str, str]) -> str:
    return secured[0]


def secure(p, snippet: str) -> None:  # type: ignore[no-untyped-def]
    """Point the pipeline at the SASL_SSL listener with the snippet's [kafka] lines."""
    text = p.path.read_text()
    plain = f'[kafka]\nbootstrap_servers = "{p.bootstrap}"\n'
    assert plain in text
    p.path.write_text(text.replace(plain, snippet.rstrip("\n") + "\n"))


def test_the_printed_pipeline_lines_run_a_fleet_exactly(secured, kafka: Kafka, pipeline) -> None:  # type: ignore[no-untyped-def]
    p = pipeline(partitions=4)
    secure(p, secured[1])
    events = generate(20_000, 4, seed=157)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    fleet = p.start_fleet(2)
    p.wait_caught_up(ends)
    assert p.stop(fleet) == 0, p.fleet_log()[-3000:]
    assert_exact(p, ground_truth(events), ends)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "refused the credentials of user 'eventfleet'"),
        ("unknown user", "refused the credentials of user 'nobody'"),
        ("wrong CA", "TLS handshake"),
    ],
)
def test_refused_access_stops_start_up_with_one_line(
    secured, pipeline, tmp_path: Path, case: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    p = pipeline(partitions=2)
    snippet = secured[1]
    lines = snippet.splitlines()
    if case == "wrong password":
        lines = [('password = "not-the-password"' if x.startswith("password") else x) for x in lines]
    elif case == "unknown user":
        lines = [('username = "nobody"' if x.startswith("username") else x) for x in lines]
    else:  # a CA of its own, which did not sign the broker's certificate
        other = devkafka.ensure_credentials(tmp_path / "other-ca")
        lines = [(f'ca_file = "{other.ca_file}"' if x.startswith("ca_file") else x) for x in lines]
    secure(p, "\n".join(lines))
    started = time.monotonic()
    result = eventfleet("run", "--config", str(p.path), "--workers", "1", "--metrics-port", "0", timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    assert took < REFUSAL_S, took
    assert expected in result.stderr and "Fix:" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
