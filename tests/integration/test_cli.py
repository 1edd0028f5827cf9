"""The commands a user runs, as subprocesses, against the real broker."""

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader

from .conftest import ROOT, SCHEMA_PATH, WINDOW_MS, Kafka

pytestmark = pytest.mark.integration


def eventfleet(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def read_topic(kafka: Kafka, topic: str) -> list[tuple[int, dict | bytes]]:
    """Every record of the topic, decoded with plain fastavro, as (partition, record) in offset order."""
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["fields"][1]["type"] = "long"
    parsed = parse_schema(schema)
    ends = kafka.ends(topic)
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "test-reader", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[tuple[int, dict | bytes]] = []
    try:
        while len(out) < sum(ends.values()):
            for m in c.consume(1000, 1.0):
                assert m.error() is None
                out.append((m.partition(), schemaless_reader(io.BytesIO(m.value()), parsed, None)))
    finally:
        c.close()
    return out


def test_produce_run_results_json(kafka: Kafka, pipeline) -> None:
    from .conftest import ground_truth

    p = pipeline(partitions=3)
    produced = eventfleet(
        "produce", "--config", str(p.path), "--count", "20000", "--seed", "9", "--events-per-second", "500"
    )
    assert produced.returncode == 0, produced.stderr
    assert "produced 20,000 events" in produced.stdout
    events = read_topic(kafka, p.topic)
    assert len(events) == 20_000
    assert len({r["campaign_id"] for _, r in events}) > 10  # realistic key spread
    ts = [r["ts"] for _, r in events]
    assert max(ts) - min(ts) > 30_000  # event time advances
    assert sum(1 for a, b in itertools.pairwise(ts) if b < a) > 100  # some out of order
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]

    # results --format json: a list of objects keyed by the column names
    shown = eventfleet("results", "--config", str(p.path), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    truth = ground_truth(events)  # per partition, in offset order
    assert truth.late > 0
    assert {(r["window_start"], r["campaign_id"], r["event_type"]): [
        r["events"], r["spend"], r["min_price"], r["max_price"]] for r in rows} == truth.rows  # fmt: skip
    assert all(r["window_end"] - r["window_start"] == WINDOW_MS for r in rows)
    assert set(rows[0]) == {"window_start", "window_end", "campaign_id", "event_type", "events", "spend",
                            "min_price", "max_price"}  # fmt: skip

    csv_out = eventfleet("results", "--config", str(p.path), "--format", "csv")
    assert (
        csv_out.stdout.splitlines()[0]
        == "window_start,window_end,campaign_id,event_type,events,spend,min_price,max_price"
    )
    assert len(csv_out.stdout.splitlines()) == len(rows) + 1
    table = eventfleet("results", "--config", str(p.path))
    assert len(table.stdout.splitlines()) == len(rows) + 2


def test_config_mistake_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "examples" / "ad-stats.toml").read_text().replace('"sum:price_micros"', '"avg:price"'))
    bad.write_text(bad.read_text().replace("../schemas/ad_event.avsc", str(SCHEMA_PATH)))
    result = eventfleet("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert "aggregate.metrics.spend" in result.stderr and "avg:price" in result.stderr
    assert result.stderr.count("\n") == 1  # one clear line, no traceback


def test_run_against_a_missing_topic_says_so(kafka: Kafka, tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    text = (ROOT / "examples" / "ad-stats.toml").read_text()
    text = text.replace("127.0.0.1:9092", kafka.bootstrap).replace('"ad-events"', '"no-such-topic"')
    cfg.write_text(text.replace("../schemas/ad_event.avsc", str(SCHEMA_PATH)))
    result = eventfleet("run", "--config", str(cfg), timeout=60)
    assert result.returncode == 2
    assert "topic 'no-such-topic' does not exist" in result.stderr


def test_kafka_status_and_demo(kafka: Kafka, tmp_path: Path) -> None:
    port = kafka.bootstrap.rsplit(":", 1)[1]
    status = eventfleet("kafka", "status", "--port", port)
    assert status.returncode == 0 and status.stdout.strip().endswith(" running")
    demo = eventfleet(
        "demo", "--events", "30000", "--partitions", "4", "--workers", "2", "--port", port,
        "--config", str(ROOT / "examples" / "ad-stats.toml"), cwd=tmp_path,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "30,000 events:" in demo.stdout and "events/s from the first event consumed" in demo.stdout
    # the demo's own pipeline file can be queried again, and the counts add up
    (pipeline_file,) = (tmp_path / ".eventfleet" / "demo").glob("*.toml")
    rows = json.loads(eventfleet("results", "--config", str(pipeline_file), "--format", "json").stdout)
    aggregated = sum(r["events"] for r in rows)
    late = int(demo.stdout.split(" aggregated, ")[1].split(" late")[0].replace(",", ""))
    assert aggregated + late == 30_000


def test_run_with_the_pipeline_and_schema_in_environment_variables(kafka: Kafka, pipeline) -> None:
    """How ECS runs the fleet: SSM parameters arrive as environment variables, no files mounted.
    The supervisor passes ``--config env:NAME`` on to its workers, which inherit the variables."""
    import os

    from .conftest import assert_exact, generate, ground_truth

    p = pipeline(partitions=2)
    events = generate(6000, 2, seed=11)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    toml = p.path.read_text()
    assert f'path = "{SCHEMA_PATH}"' in toml
    env = {
        **os.environ,
        "EVENTFLEET_PIPELINE": toml.replace(f'path = "{SCHEMA_PATH}"', 'path = "env:EVENTFLEET_SCHEMA"'),
        "EVENTFLEET_SCHEMA": SCHEMA_PATH.read_text(),
    }
    p.path.unlink()  # nothing to fall back on
    with open(p.workdir / "fleet.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", "env:EVENTFLEET_PIPELINE", "--workers", "2",
             "--metrics-port", "0"],
            cwd=p.workdir, env=env, stdout=log, stderr=log,
        )  # fmt: skip
    p.procs.append(proc)
    p.wait_caught_up(ends)
    assert p.stop(proc) == 0, p.fleet_log()[-3000:]
    assert_exact(p, ground_truth(events), ends)
