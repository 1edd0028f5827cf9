"""What a worker says when its broker goes away and comes back, and when it may not log in.

These tests stop and restart a broker of their own (never the session's)."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer.dev import kafka as devkafka

from .conftest import ROOT, SCHEMA_PATH, Kafka, Pipeline, free_ports, generate, wait_for

pytestmark = pytest.mark.integration

OUTAGE_S = 8.0


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[devkafka.Broker]:
    broker = devkafka.Broker(tmp_path / "kafka", free_ports(2))
    broker.up()
    try:
        yield broker
    finally:
        broker.down()


def pipeline_file(tmp_path: Path, bootstrap: str, topic: str, kafka_extra: str = "") -> Path:
    text = (ROOT / "examples" / "ad-stats.toml").read_text()
    text = text.replace('bootstrap_servers = "127.0.0.1:9092"', f'bootstrap_servers = "{bootstrap}"\n{kafka_extra}')
    text = text.replace('"ad-events"', f'"{topic}"').replace('"ad-stats.db"', f'"{tmp_path / "stats.db"}"')
    text = text.replace('interval = "5s"', 'interval = "500ms"')
    path = tmp_path / "pipeline.toml"
    path.write_text(text.replace("../schemas/ad_event.avsc", str(SCHEMA_PATH)))
    return path


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line of a --log-format json stderr, parsed: a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines()]


def test_a_broker_outage_is_said_once_and_its_end_once(own_broker: devkafka.Broker, tmp_path: Path) -> None:
    kafka = Kafka(own_broker.bootstrap)
    topic = kafka.topic(2)
    path = pipeline_file(tmp_path, own_broker.bootstrap, topic)
    p = Pipeline(path, tmp_path / "stats.db", topic, "ad-stats", tmp_path, table="ad_stats")
    kafka.produce(topic, generate(4000, 2, seed=3))
    log = tmp_path / "worker-0.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "consumer", "--log-format", "json", "worker", "--config",
                                   str(path)], stdout=out, stderr=out)  # fmt: skip
    p.procs.append(worker)
    try:
        p.wait_caught_up(kafka.ends(topic))

        def said(text: str) -> bool:
            return any(text in str(r["msg"]) for r in json_lines(log.read_text()))

        own_broker.down()
        stopped = time.monotonic()
        wait_for(lambda: said("is unreachable"), 30, "the worker to say the broker is unreachable")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
        own_broker.up()
        wait_for(lambda: said("is reachable again"), 60, "the worker to say the broker is back")
        kafka.produce(topic, generate(2000, 2, seed=4, start_ms=1_800_000_100_000))
        p.wait_caught_up(kafka.ends(topic))  # and it works again
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text()
    assert "%3|" not in text and "%4|" not in text and "%6|" not in text  # nothing raw from librdkafka
    records = json_lines(text)  # the log format holds: every line is JSON
    lost = [r["msg"] for r in records if "is unreachable" in str(r["msg"])]
    back = [r["msg"] for r in records if "is reachable again" in str(r["msg"])]
    address = own_broker.bootstrap
    assert len(lost) == 1 and address in str(lost[0]) and "Connection refused" in str(lost[0]), lost
    assert len(back) == 1 and address in str(back[0]), back
    away = float(str(back[0]).split("after ")[1].split(" s away")[0])
    assert OUTAGE_S <= away <= OUTAGE_S + 60, back  # from the first failed connect to the broker's return
    assert not [r for r in records if r["level"] == "error"], [r["msg"] for r in records if r["level"] == "error"]


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            'auth = "scram-sha-512"\nusername = "fleet"\npassword = "wrong"\ntls = false',
            "Kafka at {BOOTSTRAP} refused the credentials of user",
        ),
        ("tls = true", "the TLS handshake with Kafka at {BOOTSTRAP} failed"),
    ],
    ids=["authentication", "tls"],
)
def test_a_login_refused_is_said_as_such_in_one_line(kafka: Kafka, tmp_path: Path, settings: str, said: str) -> None:
    """A SASL client or a TLS client against the plain listener: the broker refuses the
    handshake, as it refuses a wrong password or a certificate signed by another CA."""
    topic = kafka.topic(1)
    said = said.format(BOOTSTRAP=kafka.bootstrap)
    path = pipeline_file(tmp_path, kafka.bootstrap, topic, settings)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "consumer", "run", "--config", str(path), "--metrics-port", "0"],
                            capture_output=True, timeout=60, env={**os.environ})  # fmt: skip
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr[-3000:]
    assert time.monotonic() - started < 30
    assert stderr.count("\n") == 1 and stderr.startswith("eventfleet: ") and said in stderr, stderr
    assert "cannot reach" not in stderr and "%3|" not in stderr
