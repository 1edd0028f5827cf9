"""Failsafe and profiling on a live worker: stack dumps, sampling profiles, JSON logs."""

import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import Kafka, generate, wait_for

pytestmark = pytest.mark.integration


def test_usr1_dumps_stacks_and_usr2_writes_a_profile(kafka: Kafka, pipeline, tmp_path) -> None:
    p = pipeline(partitions=2)
    kafka.produce(p.topic, generate(20_000, 2, seed=21))
    env = {"EVENTFLEET_PROFILE_SECONDS": "2", "EVENTFLEET_PROFILE_DIR": str(tmp_path)}
    fleet = p.start_fleet(workers=1, env=env)
    wait_for(lambda: "partitions assign: test-" in p.fleet_log(), 60)
    os.kill(fleet.pid, signal.SIGUSR1)  # the supervisor passes it on to every worker
    wait_for(lambda: "Current thread" in p.fleet_log() or "Thread 0x" in p.fleet_log(), 15)
    assert "worker.py" in p.fleet_log()  # the dump shows where the worker's loop is
    worker_pid = int(p.fleet_log().split("worker 0 started (pid ")[1].split(")")[0])
    os.kill(worker_pid, signal.SIGUSR2)
    wait_for(lambda: list(tmp_path.glob(f"eventfleet-{worker_pid}-*.collapsed")), 20)
    (profile,) = tmp_path.glob(f"eventfleet-{worker_pid}-*.collapsed")
    lines = profile.read_text().splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert any("worker.py:run" in line for line in lines)
    assert p.stop(fleet) == 0


def test_json_logs_name_the_worker_and_the_offsets(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=2)
    kafka.produce(p.topic, generate(5_000, 2, seed=22))
    ends = kafka.ends(p.topic)
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "--log-format", "json", "run", "--config", str(p.path), "--workers", "1",
         "--metrics-port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    p.procs.append(proc)  # type: ignore[arg-type]
    p.wait_caught_up(ends)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"ts", "level", "logger", "pid", "worker", "msg"} <= set(entries[0])
    flushes = [e for e in entries if e["msg"].startswith("flushed")]
    assert flushes and all(e["worker"] == "0" for e in flushes)
    assert any(f"{p.topic}[0]={ends[0]}" in e["msg"] for e in flushes)
    assert any(e["worker"] == "-" and e["logger"] == "consumer.fleet" for e in entries)
