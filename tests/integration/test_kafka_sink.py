"""The kafka sink against the real broker: a read_committed consumer of the output topic,
written here with plain confluent-kafka and fastavro (conftest.read_deltas), reconstructs
aggregates equal to the ground truth through crashes inside the transaction and fencing."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from confluent_kafka.admin import NewTopic

from .conftest import OUTPUT_VALUE_SCHEMA, Kafka, assert_exact, combine, generate, ground_truth, read_deltas, wait_for
from .test_exactness import _scrape
from .test_fleet import _free_port

pytestmark = pytest.mark.integration


def eventfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], capture_output=True, text=True, timeout=120)


def test_two_workers_write_exact_deltas(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=8, sink="kafka")
    events = generate(120_000, 8, seed=11)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0, 0]
    truth = ground_truth(events)
    assert truth.late > 100
    assert_exact(p, truth, ends)  # the output topic read back with read_committed, and the offsets

    # deltas, not totals: several records per key, each naming the partition it came from
    deltas = read_deltas(kafka.bootstrap, p.out_topic)
    assert len(deltas) > len(truth.rows)
    assert {d["source_partition"] for d, _ in deltas} == set(range(8))
    # every record of a key is on one output partition (keyed): consumers can combine per partition
    where: dict[tuple[int, str, str], set[int]] = {}
    for d, q in deltas:
        where.setdefault((d["window_start"], d["campaign_id"], d["event_type"]), set()).add(q)
    assert all(len(qs) == 1 for qs in where.values())

    # eventfleet results reads the same topic and combines the same way
    shown = eventfleet("results", "--config", str(p.path), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert {(r["window_start"], r["campaign_id"], r["event_type"]): [
        r["events"], r["spend"], r["min_price"], r["max_price"]] for r in rows} == truth.rows  # fmt: skip

    # a restart starts where the committed offsets say: it reads only what comes after it joined
    port = _free_port()
    p.start_worker(metrics_port=port)
    wait_for(lambda: _scrape(port, "eventfleet_assigned_partitions") == 8, 60, "the restarted worker's assignment")
    later = generate(8_000, 8, seed=12)
    kafka.produce(p.topic, later)
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert _scrape(port, "eventfleet_events_consumed_total") == len(later)  # nothing read twice
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events + later), ends)


@pytest.mark.parametrize("fault", ["in_sink_transaction@3", "before_sink_write@3", "after_sink_commit@3"])
def test_sigkill_during_a_transaction_is_exact(kafka: Kafka, pipeline, fault: str) -> None:
    """SIGKILL with the deltas acknowledged and the offsets sent but the transaction not
    committed (and before, and after it): a read_committed consumer never sees the killed
    transaction's records, a read_uncommitted one does."""
    p = pipeline(partitions=4, flush="300ms", sink="kafka")
    events = generate(60_000, 4, seed=12)
    producing = kafka.produce_in_background(p.topic, events, 6.0)
    doomed = p.start_worker(fault=fault)
    assert doomed.wait(60) == -signal.SIGKILL, p.logs()[-3000:]
    point = fault.split("@")[0]
    assert f"EVENTFLEET_FAULT: killing this worker at {point}" in p.logs()
    p.start_worker()  # its offset fetch waits until the coordinator aborts the open transaction
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    truth = ground_truth(events)
    assert_exact(p, truth, ends)
    if point == "in_sink_transaction":
        seen_by_all = read_deltas(kafka.bootstrap, p.out_topic, "read_uncommitted")
        committed = read_deltas(kafka.bootstrap, p.out_topic)
        assert len(seen_by_all) > len(committed)  # the aborted transaction's deltas are in the log
        assert combine([d for d, _ in seen_by_all]) != truth.rows  # and would count events twice


def test_worker_stalled_before_its_transaction_is_fenced(kafka: Kafka, pipeline) -> None:
    """A worker stuck just before its sink write past max.poll.interval.ms: the group moves its
    partitions and the new owner writes; the stalled worker's offsets are refused by the group
    coordinator, its transaction aborted, and it rewinds."""
    p = pipeline(partitions=4, flush="500ms", extra='"max.poll.interval.ms" = 7000', sink="kafka")
    events = generate(80_000, 4, seed=14)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    stalled = p.start_worker(fault="before_sink_write@4:sleep=14")
    wait_for(lambda: "EVENTFLEET_FAULT: stalling" in p.logs(), 60)
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    wait_for(lambda: "flush rolled back" in (p.workdir / "worker-0.log").read_text(), 30)
    p.stop_all()
    assert stalled.returncode == 0
    assert_exact(p, ground_truth(events), ends)


def test_worker_stalled_inside_its_transaction_is_exact(kafka: Kafka, pipeline) -> None:
    """A worker stuck after sending its offsets to the transaction, before committing it, past
    max.poll.interval.ms and the transaction timeout: the new owner's offset fetch waits until
    the coordinator settled that transaction, so it resumes from offsets that match the output."""
    p = pipeline(partitions=4, flush="500ms", extra='"max.poll.interval.ms" = 7000', sink="kafka")
    events = generate(80_000, 4, seed=15)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    stalled = p.start_worker(fault="in_sink_transaction@4:sleep=14")
    wait_for(lambda: "EVENTFLEET_FAULT: stalling" in p.logs(), 60)
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    p.stop_all()
    assert stalled.returncode == 0
    new_log = (p.workdir / "worker-1.log").read_text()
    assert "a transaction had them pending" in new_log, new_log[-3000:]  # it waited for the stalled one
    assert_exact(p, ground_truth(events), ends)


def test_check_config_connects_and_explains(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=3, sink="kafka")
    ok = eventfleet("check-config", "--config", str(p.path))
    assert ok.returncode == 0, ok.stderr
    assert f"output topic {p.out_topic} does not exist: the first worker creates it (3 partitions" in ok.stdout
    assert "transactions work (transaction.timeout.ms=10000)" in ok.stdout
    value = next(line for line in ok.stdout.splitlines() if "message value (schemaless Avro): " in line)
    schema = json.loads(value.split("(schemaless Avro): ", 1)[1])
    assert [f["name"] for f in schema["fields"]] == [f["name"] for f in OUTPUT_VALUE_SCHEMA["fields"]]

    text = p.path.read_text()
    for change, message in [
        (text.replace(kafka.bootstrap, "127.0.0.1:1"), "cannot reach Kafka at 127.0.0.1:1"),
        (text.replace('"transaction.timeout.ms" = 10000', '"transaction.timeout.ms" = 3600000'),
         "transaction.timeout.ms is above the broker's transaction.max.timeout.ms; lower it"),
        (text + "\n[dlq]\nenabled = false\n", "config error at 'dlq.enabled'"),
    ]:  # fmt: skip
        p.path.write_text(change)
        bad = eventfleet("check-config", "--config", str(p.path))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert bad.stderr.startswith("eventfleet: ") and len(bad.stderr.splitlines()) == 1  # one line, the fix
    p.path.write_text(text)

    # a compacted output topic would keep only the last delta of each key: refused, by workers too
    kafka.admin.create_topics([NewTopic(p.out_topic, 3, 1, config={"cleanup.policy": "compact"})])[p.out_topic].result(
        30
    )
    bad = eventfleet("check-config", "--config", str(p.path))
    assert bad.returncode == 2
    assert "config error at 'sink.topic'" in bad.stderr and "cleanup.policy=compact" in bad.stderr
    worker = p.start_worker()
    assert worker.wait(60) == 2
    assert "cleanup.policy=compact" in p.logs()


def test_offsets_the_sink_did_not_write_are_refused(kafka: Kafka, pipeline) -> None:
    """A group that committed plain offsets (here: with the sqlite sink) has no watermark in
    them: resuming from them could not be exact, so the kafka sink refuses them."""
    p = pipeline(partitions=2)
    events = generate(2_000, 2, seed=16)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    text = p.path.read_text()
    sink = text[text.index("[sink]") : text.index("[flush]")]
    p.path.write_text(text.replace(sink, f'[sink]\ntype = "kafka"\ntopic = "{p.out_topic}"\n'))
    worker = p.start_worker()
    assert worker.wait(90) == 2
    assert "that the kafka sink did not write" in p.logs() and "Use a new kafka.group_id" in p.logs()


def test_supervised_fleet_with_a_killed_worker_and_lag_back_to_zero(kafka: Kafka, pipeline) -> None:
    """eventfleet run with the kafka sink: a worker SIGKILLed mid-stream is restarted, the lag
    metric follows the offsets committed inside the transactions back to 0, results exact."""
    from .test_fleet import _free_port, _get, _metric, _worker_pids

    port = _free_port()
    p = pipeline(partitions=4, flush="500ms", extra='"statistics.interval.ms" = 1000', sink="kafka")
    events = generate(100_000, 4, seed=17)
    producing = kafka.produce_in_background(p.topic, events, 12.0)
    fleet = p.start_fleet(workers=2, metrics_port=port)
    wait_for(lambda: len(p.positions()) == 4, 60, "the fleet to flush every partition")
    os.kill(_worker_pids(p.fleet_log())[0][-1], signal.SIGKILL)
    wait_for(lambda: len(_worker_pids(p.fleet_log()).get(0, [])) == 2, 60, "worker 0 to be restarted")
    assert producing.is_alive()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)

    def lag_is_zero() -> bool:
        text = _get(port, "/metrics")[1]
        lags = re.findall(r'eventfleet_consumer_lag_messages\{partition="(\d+)",topic="[^"]+"\} ([\d.e+]+)', text)
        return len(lags) == 4 and all(float(v) == 0 for _, v in lags)

    wait_for(lag_is_zero, 30, "consumer lag 0 on every partition")
    text = _get(port, "/metrics")[1]
    assert _metric(text, "eventfleet_flushes_total", 'outcome="ok"') > 0
    assert _metric(text, "eventfleet_kafka_commits_total") == 0  # the offsets are committed in the transactions
    assert p.stop(fleet) == 0
    assert_exact(p, ground_truth(events), ends)
