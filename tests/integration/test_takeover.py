"""Take-over time: how long a dead worker's partitions go unread, under ``eventfleet run``.

Measured from the SIGKILL to the moment every partition's sink position has moved past where it
stood at the kill (a new owner read and flushed it); the figures go to docs/operations.md.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Kafka, Pipeline, assert_exact, generate, ground_truth

pytestmark = pytest.mark.integration


def _worker_pids(log: str) -> dict[int, list[int]]:
    pids: dict[int, list[int]] = {}
    for worker, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        pids.setdefault(int(worker), []).append(int(pid))
    return pids


def _session_timeout(p: Pipeline, ms: int) -> None:
    text = p.path.read_text()
    assert '"session.timeout.ms" = 6000' in text
    p.path.write_text(text.replace('"session.timeout.ms" = 6000', f'"session.timeout.ms" = {ms}'))


def _until_every_partition_moves(p: Pipeline, timeout_s: float) -> float:
    """Seconds until every partition's sink position is past where it stands now."""
    started = time.monotonic()
    before = p.positions()
    while True:
        now = p.positions()
        if all(now[q][0] > before[q][0] for q in before):
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed < timeout_s, f"partitions still unread {elapsed:.1f} s after: {before} -> {now}"
        time.sleep(0.05)


def _wait(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_killed_worker_s_partitions_resume_within_seconds(kafka: Kafka, pipeline) -> None:
    """Static membership: the supervisor's restart of a SIGKILLed worker rejoins under the slot's
    group.instance.id and gets the partitions back without a rebalance, long before the 30 s
    session timeout set here would have let anyone else read them."""
    p = pipeline(partitions=8, flush="500ms")
    _session_timeout(p, 30_000)
    events = generate(200_000, 8, seed=41)
    producing = kafka.produce_in_background(p.topic, events, 35.0)
    fleet = p.start_fleet(workers=2, env={"EVENTFLEET_INSTANCE_ID": "takeover-a"})
    _wait(lambda: len(p.positions()) == 8, 90, "the fleet to flush every partition")
    _wait(lambda: p.fleet_log().count("partitions assign: ") >= 2, 30, "both workers' assignments")
    assert "group.instance.id takeover-a-<slot>" in p.fleet_log()
    victim = _worker_pids(p.fleet_log())[0][-1]
    seen = len(p.fleet_log())
    os.kill(victim, signal.SIGKILL)
    took = _until_every_partition_moves(p, timeout_s=15.0)
    print(f"\nkill-to-resume with the supervisor restarting the worker: {took:.2f} s")
    assert producing.is_alive()  # measured while events flow
    after = p.fleet_log()[seen:]
    assert "worker 0 exited with -9" in after
    assert "partitions revoke" not in after  # no rebalance: the survivor kept its partitions throughout
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(fleet) == 0
    assert_exact(p, ground_truth(events), ends)


def test_a_lost_instance_s_partitions_move_after_the_session_timeout(kafka: Kafka, pipeline) -> None:
    """A whole instance SIGKILLed (its workers die with it) never comes back: its partitions move
    to the other instance once their static members' sessions expire (6 s here)."""
    p = pipeline(partitions=4, flush="500ms")
    events = generate(120_000, 4, seed=42)
    producing = kafka.produce_in_background(p.topic, events, 35.0)
    lost = p.start_fleet(workers=1, env={"EVENTFLEET_INSTANCE_ID": "lost-a"})
    kept = p.start_fleet(workers=1, env={"EVENTFLEET_INSTANCE_ID": "kept-b"})
    _wait(lambda: len(p.positions()) == 4, 90, "the fleets to flush every partition")
    _wait(lambda: len(set(re.findall(r"\[(\d+) w0\] partitions assign: ", p.fleet_log()))) == 2, 60,
          "the partitions split between the instances")  # fmt: skip
    lost.kill()
    lost.wait()
    took = _until_every_partition_moves(p, timeout_s=40.0)
    print(f"\nkill-to-resume for a lost instance (session.timeout.ms 6000): {took:.2f} s")
    assert producing.is_alive()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(kept) == 0
    assert_exact(p, ground_truth(events), ends)


def test_a_second_instance_with_the_same_id_on_this_host_stops_at_once(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=2, flush="500ms")
    env = {"EVENTFLEET_INSTANCE_ID": "twin"}
    first = p.start_fleet(workers=1, env=env)
    _wait(lambda: "partitions assign: " in p.fleet_log(), 60, "the first instance to join")
    second = subprocess.run([sys.executable, "-m", "consumer", "run", "--config", str(p.path), "--workers", "1",
                             "--metrics-port", "0"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("eventfleet: another eventfleet run on this host (pid ")
    assert "is instance 'twin' of group" in second.stderr and "EVENTFLEET_INSTANCE_ID" in second.stderr
    assert second.stderr.count("\n") == 1
    assert first.poll() is None
    assert p.stop(first) == 0


def test_an_instance_fenced_by_a_twin_elsewhere_stops_instead_of_fencing_back(
    kafka: Kafka, pipeline, tmp_path: Path
) -> None:
    """Two hosts with one instance id (simulated here by a second lock folder): the broker fences
    the older member. Its supervisor restarts the worker once or twice (a coordinator failover
    fences a member once), which fences the twin in turn; fenced again and again, the older
    instance stops with exit 2 and a line naming the fix. The twin runs on, and results are exact."""
    p = pipeline(partitions=2, flush="500ms")
    events = generate(20_000, 2, seed=43)
    kafka.produce(p.topic, events)
    env = {"EVENTFLEET_INSTANCE_ID": "twin"}
    first = p.start_fleet(workers=1, env=env)
    _wait(lambda: "partitions assign: " in p.fleet_log(), 60, "the first instance to join")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    twin_started = time.monotonic()
    second = p.start_fleet(workers=1, env={**env, "TMPDIR": str(elsewhere)})
    assert first.wait(120) == 2, p.fleet_log()[-3000:]
    print(f"take-over: the twin stopped the older instance in {time.monotonic() - twin_started:.1f} s")
    log = p.fleet_log()
    assert "this worker was fenced" in log
    assert log.count("was fenced (group.instance.id twin-0); restarting it") >= 2  # both instances log theirs
    assert "fenced 3 times within 60 s by another member of group" in log
    assert "with group.instance.id twin-0: stopping this instance" in log
    assert "EVENTFLEET_INSTANCE_ID" in log
    assert second.poll() is None
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop(second) == 0
    assert_exact(p, ground_truth(events), ends)
