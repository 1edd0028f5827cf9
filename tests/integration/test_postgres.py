"""Exactly-once into PostgreSQL: real broker, real PostgreSQL, real worker processes.

The results are read from PostgreSQL by the test's own queries and compared with the ground
truth computed from the produced events (conftest).
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import Postgres
from .conftest import Kafka, assert_exact, generate, ground_truth, wait_for

pytestmark = pytest.mark.integration


def eventfleet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], capture_output=True, text=True, timeout=timeout)


def test_two_workers_aggregate_exactly_into_postgres(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=8, sink="postgres")
    events = generate(120_000, 8, seed=21)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    assert sum(ends.values()) == 120_000
    checked = eventfleet("check-config", "--config", str(p.path))
    assert checked.returncode == 0, checked.stderr
    assert "sink: PostgreSQL" in checked.stdout and "will be created" in checked.stdout
    p.start_worker()
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0, 0]
    truth = ground_truth(events)
    assert truth.late > 100
    assert_exact(p, truth, ends)
    assert kafka.committed(p.topic, p.group, 8) == ends
    # both workers flushed (the group really split the partitions between them)
    for i in range(2):
        assert "flushed" in (p.workdir / f"worker-{i}.log").read_text()
    # `eventfleet results` reads the same rows back from PostgreSQL
    shown = eventfleet("results", "--config", str(p.path), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {(r["window_start"], r["campaign_id"], r["event_type"]): [r["events"], r["spend"], r["min_price"],
            r["max_price"]] for r in json.loads(shown.stdout)}  # fmt: skip
    assert rows == truth.rows
    checked = eventfleet("check-config", "--config", str(p.path))
    assert checked.returncode == 0 and "match and can be written" in checked.stdout


@pytest.mark.parametrize("fault", ["in_sink_transaction@3", "after_sink_commit@3"])
def test_sigkill_mid_flush_then_restart_is_exact(kafka: Kafka, pipeline, fault: str) -> None:
    """SIGKILL inside the PostgreSQL transaction (before COMMIT: the server rolls it back when
    the connection drops) or right after it (before the Kafka commit), then a restart."""
    p = pipeline(partitions=4, flush="300ms", sink="postgres")
    events = generate(60_000, 4, seed=22)
    producing = kafka.produce_in_background(p.topic, events, 6.0)
    doomed = p.start_worker(fault=fault)
    assert doomed.wait(90) == -signal.SIGKILL, p.logs()[-3000:]
    assert f"EVENTFLEET_FAULT: killing this worker at {fault.split('@')[0]}" in p.logs()
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_mid_run_pauses_and_recovers_exactly(
    kafka: Kafka, pipeline, postgres: Postgres, mode: str
) -> None:
    """The server goes down while two workers consume (``fast``: sessions terminated;
    ``immediate``: like a crash, recovery at start), stays down a few seconds and comes back:
    the workers pause and retry, nobody crashes, and the result is exact."""
    server = postgres.restartable()
    p = pipeline(partitions=8, flush="500ms", sink="postgres")
    events = generate(150_000, 8, seed=23)
    producing = kafka.produce_in_background(p.topic, events, 20.0)
    workers = [p.start_worker(), p.start_worker()]
    wait_for(lambda: len(p.positions()) == 8, 90, "both workers to flush every partition")
    server.stop(mode)
    try:
        wait_for(lambda: p.logs().count("partitions paused") >= 2, 60, "both workers to pause")
        time.sleep(4.0)
        assert all(w.poll() is None for w in workers), p.logs()[-3000:]
        assert producing.is_alive()  # the outage happened mid-stream
    finally:
        server.start()
    wait_for(lambda: p.logs().count("partitions resumed") >= 2, 90, "both workers to resume")
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert all(w.poll() is None for w in workers)  # rode out the outage without a crash
    assert p.stop_all() == [0, 0]
    assert "sink write failed" in p.logs()
    assert_exact(p, ground_truth(events), ends)


def test_worker_stalled_in_a_flush_is_fenced_by_postgres(kafka: Kafka, pipeline) -> None:
    """Two sinks write the same partition: a worker stuck before its write past
    max.poll.interval.ms loses its partitions to a new worker that flushes; the stale write's
    compare-and-set fails, it rolls back, and the result is exact."""
    p = pipeline(partitions=4, flush="500ms", extra='"max.poll.interval.ms" = 7000', sink="postgres")
    events = generate(80_000, 4, seed=24)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    stalled = p.start_worker(fault="before_sink_write@4:sleep=14")
    wait_for(lambda: "EVENTFLEET_FAULT: stalling" in p.logs(), 60, "the stall")
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    wait_for(lambda: "flush rolled back" in (p.workdir / "worker-0.log").read_text(), 60, "the fenced rollback")
    p.stop_all()
    assert stalled.returncode == 0
    assert_exact(p, ground_truth(events), ends)


def test_a_table_of_another_pipeline_is_refused(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=1, sink="postgres")
    events = generate(2_000, 1, seed=25)
    kafka.produce(p.topic, events)
    p.start_worker()
    p.wait_caught_up(kafka.ends(p.topic))
    assert p.stop_all() == [0]
    before = p.results()
    other = p.workdir / "other.toml"  # same table, but "spend" would become a max
    other.write_text(p.path.read_text().replace('spend = "sum:price_micros"', 'spend = "max:price_micros"'))
    for command in ("check-config", "worker"):
        refused = eventfleet(command, "--config", str(other))
        assert refused.returncode == 2, refused.stderr
        assert f"table '{p.table}' was written by a pipeline that computes" in refused.stderr
        assert "Use another [sink] table" in refused.stderr
    assert p.results() == before


def test_check_config_names_a_down_database(pipeline, postgres: Postgres) -> None:
    server = postgres.restartable()
    p = pipeline(partitions=1, sink="postgres")
    server.stop("fast")
    try:
        result = eventfleet("check-config", "--config", str(p.path))
    finally:
        server.start()
    assert result.returncode == 2
    assert result.stderr.startswith("eventfleet: cannot connect to PostgreSQL at ")
    assert f"127.0.0.1:{server.port}" in result.stderr and "set by sink.dsn" in result.stderr
    assert "Fix: start the server" in result.stderr
    assert result.stderr.count("\n") == 1  # one clear line, no traceback
    assert eventfleet("check-config", "--config", str(p.path)).returncode == 0  # and fine once it is back
