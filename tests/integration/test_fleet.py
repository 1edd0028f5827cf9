"""The supervised fleet (``eventfleet run``): restarts, watchdog, memory guard, metrics, shutdown."""

import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request

import pytest

from consumer.protocol import EXIT_RECYCLE

from .conftest import Kafka, assert_exact, generate, ground_truth, wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _worker_pids(log: str) -> dict[int, list[int]]:
    pids: dict[int, list[int]] = {}
    for worker, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        pids.setdefault(int(worker), []).append(int(pid))
    return pids


def _metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" + labels if labels else "")) and not line.startswith("#"):
            head, value = line.rsplit(" ", 1)
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def test_killed_worker_is_restarted_and_results_are_exact(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=8, flush="700ms")
    events = generate(150_000, 8, seed=11)
    producing = kafka.produce_in_background(p.topic, events, 15.0)
    port = _free_port()
    fleet = p.start_fleet(workers=2, metrics_port=port)
    wait_for(lambda: len(p.positions()) == 8, 60, "the fleet to flush every partition")
    victim = _worker_pids(p.fleet_log())[0][-1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(_worker_pids(p.fleet_log()).get(0, [])) == 2, 60, "worker 0 to be restarted")
    restarts = _metric(_get(port, "/metrics")[1], "eventfleet_worker_restarts_total", 'reason="crash"')
    assert restarts == 1
    assert producing.is_alive()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(fleet) == 0  # every worker stopped cleanly
    assert_exact(p, ground_truth(events), ends)


def test_hung_worker_is_replaced_by_the_watchdog(kafka: Kafka, pipeline, tmp_path) -> None:
    p = pipeline(partitions=4, flush="500ms", sections='[fleet]\nwatchdog_timeout = "4s"')
    events = generate(60_000, 4, seed=12)
    producing = kafka.produce_in_background(p.topic, events, 8.0)
    fault = {"EVENTFLEET_FAULT": "before_sink_write@3:sleep=600", "EVENTFLEET_FAULT_ONCE": str(tmp_path / "fired")}
    port = _free_port()
    fleet = p.start_fleet(workers=1, metrics_port=port, env=fault)
    wait_for(lambda: _watchdog_kills(port) == 1, 60, "the watchdog")  # the stalled worker, killed
    wait_for(lambda: len(_worker_pids(p.fleet_log()).get(0, [])) == 2, 60, "the replacement worker")
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert _watchdog_kills(port) == 1  # the fault fired once: the replacement ran on
    assert p.stop(fleet) == 0
    assert_exact(p, ground_truth(events), ends)


def _watchdog_kills(port: int) -> float:
    try:
        return _metric(_get(port, "/metrics")[1], "eventfleet_watchdog_kills_total")
    except OSError:  # the supervisor is still starting
        return 0.0


def test_metrics_health_and_lag_back_to_zero(kafka: Kafka, pipeline) -> None:
    port = _free_port()
    p = pipeline(partitions=4, flush="500ms", extra='"statistics.interval.ms" = 1000')
    events = generate(80_000, 4, seed=13)
    producing = kafka.produce_in_background(p.topic, events, 8.0)
    fleet = p.start_fleet(workers=2, metrics_port=port)
    wait_for(lambda: _get_or_none(port, "/readyz") == 200, 60, "/readyz")
    assert _get(port, "/healthz")[0] == 200
    first = _metric(_get(port, "/metrics")[1], "eventfleet_events_consumed_total")
    wait_for(lambda: _metric(_get(port, "/metrics")[1], "eventfleet_events_consumed_total") > first, 30,
             "the consumed counter to move")  # fmt: skip
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)

    def lag_is_zero() -> bool:
        text = _get(port, "/metrics")[1]
        lags = re.findall(r'eventfleet_consumer_lag_messages\{partition="(\d+)",topic="[^"]+"\} ([\d.e+]+)', text)
        return len(lags) == 4 and all(float(v) == 0 for _, v in lags)

    wait_for(lag_is_zero, 30, "consumer lag 0 on every partition")
    text = _get(port, "/metrics")[1]
    assert _metric(text, "eventfleet_events_consumed_total") >= 80_000
    truth = ground_truth(events)
    assert _metric(text, "eventfleet_events_late_total") == truth.late > 0  # counted once, when durable
    assert _metric(text, "eventfleet_events_aggregated_total") + truth.late >= 80_000
    assert _metric(text, "eventfleet_assigned_partitions") == 4
    assert _metric(text, "eventfleet_flush_duration_seconds_count") > 0
    assert _metric(text, "eventfleet_kafka_commits_total") > 0
    assert p.stop(fleet) == 0
    assert_exact(p, truth, ends)


def _get_or_none(port: int, path: str) -> int | None:
    try:
        return _get(port, path)[0]
    except OSError:
        return None


def test_sigterm_under_load_exits_0_and_resumes_exactly(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=8, flush="2s")
    events = generate(150_000, 8, seed=14)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    fleet = p.start_fleet(workers=2)
    wait_for(lambda: len(p.positions()) == 8, 60, "the fleet to flush every partition")
    time.sleep(1.0)  # mid flush interval: unflushed partials in memory
    assert p.stop(fleet) == 0  # every worker flushed, committed and left (the supervisor's 0: all clean)
    assert producing.is_alive()
    fleet = p.start_fleet(workers=2)
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(fleet) == 0
    assert_exact(p, ground_truth(events), ends)


def test_memory_guard_recycles_a_worker_without_loss(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4, flush="500ms", sections='[fleet]\nmax_rss = "1MiB"')
    events = generate(40_000, 4, seed=15)
    kafka.produce(p.topic, events)
    worker = p.start_worker()
    assert worker.wait(60) == EXIT_RECYCLE  # it flushed, committed and left on purpose
    ends = kafka.ends(p.topic)
    unlimited = p.path.read_text().replace('max_rss = "1MiB"', 'max_rss = "0"')
    p.path.write_text(unlimited)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_sink_outage_pauses_partitions_and_recovers_exactly(kafka: Kafka, pipeline) -> None:
    import sqlite3

    p = pipeline(partitions=4, flush="500ms")
    events = generate(150_000, 4, seed=16)
    producing = kafka.produce_in_background(p.topic, events, 25.0)
    port = _free_port()
    fleet = p.start_fleet(workers=1, metrics_port=port)
    wait_for(lambda: len(p.positions()) == 4, 60, "the fleet to flush every partition")
    worker = _worker_pids(p.fleet_log())[0][-1]
    lock = sqlite3.connect(p.db, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every write fails with 'database is locked' from now on
    try:
        wait_for(lambda: _paused(port) == 4, 30, "the worker to pause")
        frozen = p.positions()
        rss = [_rss_mb(worker)]
        for _ in range(15):  # events keep flowing into Kafka meanwhile
            time.sleep(1.0)
            rss.append(_rss_mb(worker))
        assert producing.is_alive()
        assert p.positions() == frozen  # nothing written during the outage
        assert max(rss) - rss[0] < 30, f"memory grew while paused: {rss}"
    finally:
        lock.execute("COMMIT")
        lock.close()
    back = time.monotonic()
    wait_for(lambda: p.positions() != frozen, 60, "the positions to move again")
    print(f"recovery: sink back, positions moving {time.monotonic() - back:.1f} s after the lock was released")
    wait_for(lambda: _paused(port) == 0, 60, "the worker to resume")
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(fleet) == 0
    assert _worker_pids(p.fleet_log())[0] == [worker]  # the same worker rode out the outage
    assert_exact(p, ground_truth(events), ends)


def _paused(port: int) -> float:
    return _metric(_get(port, "/metrics")[1], "eventfleet_paused_partitions")
