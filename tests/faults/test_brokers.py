"""Brokers fail under a running fleet (``eventfleet run``, two workers): the results stay exact.

Numbered input (``generate``), produced while the fleet reads, ground truth in plain Python, the
output compared row for row, and nothing in the dead letters (every event is valid). Every broker
fault runs with each sink: SQLite and PostgreSQL (positions in the sink's transaction) and the
kafka sink (positions in Kafka transactions).
"""

import os
import re
import signal
import time

import pytest

from consumer.dev import kafka as devkafka

from ..integration.conftest import Kafka, assert_exact, generate, ground_truth, wait_for
from .conftest import dead_letters, positions_now, restarts, seconds_to_progress, wait_moving

PARTITIONS = 6
EVENTS = 60_000
PACE_S = 40.0  # the events arrive over about this long, while brokers fail
BROKER_DOWN_S = 20.0  # the scenario: a broker back 20 s after its death
QUORUM_LOST_S = 30.0


def start(kafka: Kafka, pipeline, sink: str, seed: int):  # type: ignore[no-untyped-def]
    p = pipeline(partitions=PARTITIONS, sink=sink)
    events = generate(EVENTS, PARTITIONS, seed=seed)
    producer = kafka.produce_in_background(p.topic, events, pace_s=PACE_S)
    fleet = p.start_fleet(2)
    wait_moving(p)
    return p, events, producer, fleet


def finish(kafka: Kafka, p, events, producer, fleet) -> None:  # type: ignore[no-untyped-def]
    producer.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends, timeout_s=240)
    assert p.stop(fleet) == 0, p.fleet_log()[-4000:]
    assert_exact(p, ground_truth(events), ends)
    assert dead_letters(kafka.bootstrap, f"{p.topic}.dlq") == 0


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_leader_and_group_coordinator_killed_and_back_20s_later(
    healthy: devkafka.Cluster, kafka: Kafka, pipeline, sink: str
) -> None:
    p, events, producer, fleet = start(kafka, pipeline, sink, seed=151)
    leaders = healthy.leaders(p.topic)
    counts = {b: sum(1 for x in leaders.values() if x == b) for b in healthy.brokers}
    coordinator = healthy.coordinator(p.group)
    # the coordinator, when it leads as many partitions as any broker (an even spread: always)
    victim = coordinator if counts[coordinator] == max(counts.values()) else max(counts, key=counts.__getitem__)
    at_fault = kafka.ends(p.topic)
    killed_at = time.monotonic()
    healthy.kill(victim)
    took = seconds_to_progress(p, killed_at, at_fault)
    print(f"recovery: broker {victim} (coordinator, {counts[victim]} leaders) killed, {sink}: every partition "
          f"moved again {took:.1f} s after the kill")  # fmt: skip
    # the group and the partitions move to the survivors while it is down
    wait_for(lambda: victim not in healthy.leaders(p.topic).values(), 30, "leaders to move")
    time.sleep(max(0.0, BROKER_DOWN_S - (time.monotonic() - killed_at)))
    healthy.start(victim)
    finish(kafka, p, events, producer, fleet)
    assert restarts(p) == 0, p.fleet_log()[-4000:]


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_rolling_restart_of_every_broker(healthy: devkafka.Cluster, kafka: Kafka, pipeline, sink: str) -> None:
    p, events, producer, fleet = start(kafka, pipeline, sink, seed=152)
    for broker_id in healthy.brokers:
        healthy.stop(broker_id)  # SIGTERM: a controlled shutdown, as a patch roll does
        healthy.start(broker_id)
        # the next one only when every partition has its three replicas in sync again
        wait_for(lambda: all(len(r) == 3 for r in healthy.in_sync(p.topic).values()), 60, "replicas in sync")
    finish(kafka, p, events, producer, fleet)
    assert restarts(p) == 0, p.fleet_log()[-4000:]


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_two_brokers_lost_for_30s_workers_wait_and_resume(
    healthy: devkafka.Cluster, kafka: Kafka, pipeline, sink: str
) -> None:
    p, events, producer, fleet = start(kafka, pipeline, sink, seed=153)
    before = positions_now(p)
    at_fault = kafka.ends(p.topic)
    lost = list(healthy.brokers)[:2]
    for broker_id in lost:
        healthy.kill(broker_id)
    time.sleep(QUORUM_LOST_S)  # the scenario: no quorum for 30 s
    assert fleet.poll() is None, "the supervisor exited while the quorum was lost"
    for broker_id in lost:
        healthy.start(broker_id, wait=False)
    restarted_at = time.monotonic()
    took = seconds_to_progress(p, restarted_at, at_fault)
    print(f"recovery: quorum back, {sink}: every partition past its pre-kill end {took:.1f} s after the restart")
    finish(kafka, p, events, producer, fleet)
    # no worker crash-looped, and none lost its place (positions only moved forward)
    assert restarts(p) == 0, p.fleet_log()[-4000:]
    assert all(positions_now(p)[q] >= offset for q, offset in before.items())


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_worker_killed_while_a_broker_is_down(healthy: devkafka.Cluster, kafka: Kafka, pipeline, sink: str) -> None:
    p, events, producer, fleet = start(kafka, pipeline, sink, seed=154)
    victim = healthy.coordinator(p.group)
    at_fault = kafka.ends(p.topic)  # before the broker goes: its partitions' ends cannot be read after
    healthy.kill(victim)
    pids = [int(x) for x in re.findall(r"worker \d started \(pid (\d+)\)", p.fleet_log())]
    killed_at = time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: restarts(p) == 1, 30, "the supervisor to see the worker die")
    took = seconds_to_progress(p, killed_at, at_fault)
    print(f"recovery: worker killed with broker {victim} down, {sink}: every partition moved again {took:.1f} s later")
    time.sleep(max(0.0, BROKER_DOWN_S - (time.monotonic() - killed_at)))
    healthy.start(victim)
    finish(kafka, p, events, producer, fleet)


def test_transaction_coordinators_killed_mid_transaction(healthy: devkafka.Cluster, kafka: Kafka, pipeline) -> None:
    """The broker coordinating a worker's transactions (here also the group's) is SIGKILLed."""
    p, events, producer, fleet = start(kafka, pipeline, "kafka", seed=155)
    ids = re.findall(r"with transactional\.id (\S+)", p.fleet_log())
    assert ids, p.fleet_log()[-3000:]
    coordinators = {healthy.transaction_coordinator(t) for t in ids}
    victim = sorted(coordinators)[0]  # coordinates at least one worker's transactions
    at_fault = kafka.ends(p.topic)
    killed_at = time.monotonic()
    healthy.kill(victim)
    took = seconds_to_progress(p, killed_at, at_fault)
    print(f"recovery: transaction coordinator {victim} killed: every partition moved again {took:.1f} s later")
    time.sleep(max(0.0, BROKER_DOWN_S - (time.monotonic() - killed_at)))
    healthy.start(victim)
    finish(kafka, p, events, producer, fleet)
    # librdkafka's send_offsets_to_transaction can block past its timeout while the group
    # coordinator moves (confluentinc/librdkafka#5456, #5511): the kafka sink bounds it, so no
    # worker goes silent long enough for the watchdog
    assert restarts(p) == 0, p.fleet_log()[-4000:]
