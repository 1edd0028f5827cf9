"""``eventfleet replay`` against the real broker, compared exactly with independent ground truth.

Each test runs the live pipeline over its events first, then damages the table on purpose
(changed counts, a missing row, a row that should not exist) on both sides of the replayed
time: after the replay, windows from that time on must equal the ground truth over the whole
topic (late events included), and windows before it must be exactly as they were, damage
included, which proves the replay did not touch them.

Every test runs once per replayable sink: SQLite, and the test session's PostgreSQL (a fresh
table per test). The tests read and damage the tables with each database's own client.
"""

import functools
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from confluent_kafka.admin import AdminClient

from .conftest import GRACE_MS, WINDOW_MS, Kafka, Truth, assert_exact, generate, ground_truth, wait_for

pytestmark = pytest.mark.integration

START = 1_800_000_000_000  # generate()'s default first event time (window-aligned)
FLOOR = START + 30_000  # the first recomputed window of the mid-topic replays
FROM = FLOOR - 2_500  # --from-timestamp: not window-aligned; the first window starting after it is FLOOR

Rows = dict[tuple[Any, ...], list[int]]
KEY = "window_start = ? AND campaign_id = ? AND event_type = ?"


@pytest.fixture(params=["sqlite", "postgres"])
def sink(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pipeline(pipeline, sink: str):
    """conftest's factory, making pipelines of this test's sink."""
    return functools.partial(pipeline, sink=sink)


def shadow_name(p) -> str:
    """A shadow table of its own: the PostgreSQL tests share one database."""
    if p.dsn is None:
        return "shadow"
    p.other_tables.append(f"{p.table}_sh")
    return f"{p.table}_sh"


def replay(
    p, *args: str, env: dict[str, str] | None = None, stdin: Any = subprocess.DEVNULL, config: Path | None = None
):
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "replay", "--config", str(config or p.path), *args],
        capture_output=True, timeout=300, stdin=stdin, env={**os.environ, **(env or {})},
    )  # fmt: skip
    # decoded by hand: text=True would turn the carriage returns of a progress bar into newlines
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def events_around_floor(n: int, partitions: int, seed: int) -> list[tuple[int, Any]]:
    """generate()'s stream (3% up to 25 s late) plus, in every partition, deliberate out-of-order
    events around FLOOR: an early event of a window from FLOOR on before the watermark gets there,
    events of the window before FLOOR after the watermark passed it (within the grace: aggregated),
    and events of older windows after their grace (late)."""
    events = generate(n, partitions, seed)
    inserts = [  # (insert once the partition's stream reaches this time, event times to insert)
        (FLOOR - 4_000, [FLOOR + 3_000]),
        (FLOOR + 1_000, [FLOOR - 1, FLOOR - 5_000, FLOOR - 9_999]),
        (FLOOR + 4_000, [FLOOR - 2, FLOOR + 1]),
        (FLOOR + 8_000, [FLOOR - 10, FLOOR - 20_000, FLOOR + 100]),
    ]
    done: dict[int, int] = {}
    out: list[tuple[int, Any]] = []
    for partition, record in events:
        k = done.get(partition, 0)
        if k < len(inserts) and record["ts"] >= inserts[k][0]:
            for j, t in enumerate(inserts[k][1]):
                out.append((partition, {**record, "ts": t, "event_id": f"{record['event_id']}-x{k}{j}"}))
            done[partition] = k + 1
        out.append((partition, record))
    return out


def by_partition(events: list[tuple[int, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for partition, record in events:
        out.setdefault(partition, []).append(record)
    return out


def kept_window_offsets(events: list[tuple[int, Any]], floor: int) -> dict[int, list[int]]:
    """Per partition, the offsets of aggregated (not late) events of windows before ``floor`` that
    come after the first event of a window from ``floor`` on: the events a replay must not count
    twice. Plain Python, like ground_truth."""
    out: dict[int, list[int]] = {}
    for partition, records in by_partition(events).items():
        watermark = None
        seen_new = False
        for offset, r in enumerate(records):
            start = r["ts"] // WINDOW_MS * WINDOW_MS
            watermark = r["ts"] if watermark is None else max(watermark, r["ts"])
            late = start + WINDOW_MS + GRACE_MS <= watermark
            seen_new = seen_new or start >= floor
            if seen_new and start < floor and not late:
                out.setdefault(partition, []).append(offset)
    return out


def run_live(p, kafka: Kafka, ends: dict[int, int]) -> None:
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]


def damage(p, floor: int) -> None:
    """Break the table on both sides of ``floor``: a replay must repair only windows from floor on."""
    keys = sorted(p.results())
    new = [k for k in keys if k[0] >= floor]
    old = [k for k in keys if k[0] < floor]
    t, size = p.table, WINDOW_MS
    p.execute(
        [
            (f"UPDATE {t} SET events = events + 1000, spend = spend - 7 WHERE window_start >= ?", (floor,)),
            (f"DELETE FROM {t} WHERE {KEY}", new[0]),
            (f"INSERT INTO {t} VALUES (?, ?, 'c-none', 'click', 1, 1, 1, 1)", (floor + size, floor + 2 * size)),
            *([(f"UPDATE {t} SET max_price = max_price + 1 WHERE {KEY}", old[0])] if old else []),
            (f"INSERT INTO {t} VALUES (?, ?, 'c-none', 'click', 9, 9, 9, 9)", (floor - size, floor)),
        ]
    )


def split(rows: Rows, floor: int) -> tuple[Rows, Rows]:
    return {k: v for k, v in rows.items() if k[0] < floor}, {k: v for k, v in rows.items() if k[0] >= floor}


def assert_replayed(p, before: Rows, truth: Truth, floor: int, ends: dict[int, int]) -> None:
    """Windows before ``floor`` exactly as before the replay, windows from it as the ground truth,
    every position at its end and the late count of a fresh run."""
    old, new = split(p.results(), floor)
    assert old == split(before, floor)[0]
    expected = split(truth.rows, floor)[1]
    missing, extra = expected.keys() - new.keys(), new.keys() - expected.keys()
    wrong = {k: (new[k], expected[k]) for k in expected.keys() & new.keys() if new[k] != expected[k]}
    assert not missing and not extra and not wrong, (
        f"{len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong rows, e.g. {list(wrong.items())[:3]}"
    )
    positions = p.positions()
    assert {q: positions[q][0] for q in ends} == ends
    assert sum(v[1] for v in positions.values()) == truth.late


def members(kafka: Kafka, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    return len(admin.describe_consumer_groups([group])[group].result(30).members or [])


def replay_filters(p) -> dict[int, tuple[int, int]]:
    rows = p.query(
        f"SELECT partition, windows_from, until_offset FROM {p.table}_replay WHERE consumer_group = ?", (p.group,)
    )
    assert rows is not None, f"no table {p.table}_replay"
    return {r[0]: (r[1], r[2]) for r in rows}


# ---------------------------------------------------------------------------------------------


def test_replay_from_earliest_rebuilds_the_table(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4)
    events: list[tuple[int, Any]] = generate(60_000, 4, seed=31)
    poison = [b"", b"\x00garbage\xff" * 3, b"\x02\x80"]
    for i, value in enumerate(poison):  # undecodable messages: counted again, but not sent twice
        events.insert(15_000 * (i + 1), (i % 4, value))
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    run_live(p, kafka, ends)
    truth = ground_truth(events)
    assert_exact(p, truth, ends)
    damage(p, START)
    assert p.results() != truth.rows

    done = replay(p, "--from-earliest", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exact(p, truth, ends)
    assert kafka.committed(p.topic, p.group, 4) == ends
    windows = len({k[0] for k in truth.rows})
    assert "replayed 60,003 events in" in done.stdout
    assert sum(v[2] for v in p.positions().values()) == len(poison)
    assert sum(kafka.ends(f"{p.topic}.dlq").values()) == len(poison)  # no dead letter twice
    assert f"recomputed {windows:,} windows ({len(truth.rows):,} rows) in table {p.table}" in done.stdout
    assert "events/s" in done.stderr and "replay" in done.stderr  # the progress bar
    progress = [line for line in done.stderr.splitlines() if line.startswith("replay: ")]
    assert "\r" not in done.stderr and 1 <= len(progress) <= 11, done.stderr  # a pipe: a few plain lines
    assert replay_filters(p) == {}  # every partition passed its filter: none is left


def test_replay_from_a_timestamp_keeps_older_windows_and_recomputes_newer(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4)
    events = events_around_floor(120_000, 4, seed=32)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    truth = ground_truth(events)
    kept = kept_window_offsets(events, FLOOR)
    assert all(len(kept.get(q, [])) >= 5 for q in range(4))  # out-of-order events around FLOOR, everywhere
    run_live(p, kafka, ends)
    assert_exact(p, truth, ends)
    damage(p, FLOOR)
    before = p.results()
    positions_before = p.positions()

    plan = replay(p, "--from-timestamp", str(FROM), "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "current" in plan.stdout and "new" in plan.stdout and "to reprocess" in plan.stdout
    assert "windows from 2027-01-15T08:00:30.000Z (the first window that starts at or after" in plan.stdout
    lines = [line.split() for line in plan.stdout.splitlines() if line.strip().startswith(p.topic)]
    assert len(lines) == 4
    for cols in lines:
        current, new, end, todo = (int(c.replace(",", "")) for c in cols[2:6])
        assert current == end == ends[int(cols[1])] and 0 < new < current and todo == end - new
        assert "checkpoint" in " ".join(cols)
    assert p.results() == before and p.positions() == positions_before  # a dry run changes nothing

    refused = replay(p, "--from-timestamp", str(FROM))  # no --yes, stdin not a terminal
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert p.results() == before

    done = replay(p, "--from-timestamp", "2027-01-15T08:00:27.500Z", "--yes")  # = FROM
    assert done.returncode == 0, done.stderr[-3000:]
    assert_replayed(p, before, truth, FLOOR, ends)
    assert kafka.committed(p.topic, p.group, 4) == ends
    windows = len({k[0] for k in truth.rows if k[0] >= FLOOR})
    assert f"recomputed {windows:,} windows" in done.stdout
    reprocessed = sum(int(cols[5].replace(",", "")) for cols in lines)
    assert f"replayed {reprocessed:,} events" in done.stdout
    assert reprocessed < sum(ends.values()) * 0.75  # it rewound to checkpoints, not to the start

    # the live fleet continues: later events, some for windows before FLOOR within their grace
    more = generate(20_000, 4, seed=33, start_ms=START + 60_000)
    kafka.produce(p.topic, more)
    ends = kafka.ends(p.topic)
    run_live(p, kafka, ends)
    truth = ground_truth(events + more)
    got = p.results()
    damaged_before = {k for k, v in split(before, FLOOR)[0].items() if truth.rows.get(k) != v}
    assert len(damaged_before) == 2  # the damage before FLOOR is still there, untouched
    assert {k: v for k, v in got.items() if k not in damaged_before} == {
        k: v for k, v in truth.rows.items() if k not in damaged_before
    }
    assert sum(v[1] for v in p.positions().values()) == truth.late


def test_replay_from_offsets(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4)
    events = events_around_floor(80_000, 4, seed=34)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    truth = ground_truth(events)
    run_live(p, kafka, ends)
    records = by_partition(events)
    given = {1: 14_000, 3: 9_000}
    floor = min(records[q][o]["ts"] // WINDOW_MS * WINDOW_MS for q, o in given.items())
    assert START < floor < max(r["ts"] for r in records[0])
    damage(p, floor)
    before = p.results()

    done = replay(p, "--from-offsets", ",".join(f"{q}:{o}" for q, o in given.items()), "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--from-offsets: the earliest window of the events at those offsets is" in done.stdout
    for cols in (line.split() for line in done.stdout.splitlines() if line.strip().startswith(p.topic)):
        if int(cols[1]) in given:  # the partitions named are reread from at or before their offsets
            assert int(cols[3].replace(",", "")) <= given[int(cols[1])]
    assert_replayed(p, before, truth, floor, ends)

    bad = replay(p, "--from-offsets", "7:10", "--yes")
    assert bad.returncode == 2 and f"{p.topic}[7] does not exist" in bad.stderr


def test_replay_is_refused_while_the_group_has_members(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=2)
    events = generate(20_000, 2, seed=35)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    worker = p.start_worker()
    p.wait_caught_up(ends)
    before = p.results()

    refused = replay(p, "--from-earliest", "--yes")
    assert refused.returncode == 2, refused.stdout
    err = refused.stderr
    assert f"consumer group '{p.group}' has 1 active member(s)" in err
    assert f"eventfleet-{os.uname().nodename}-pid{worker.pid}-ppid{os.getpid()}" in err  # which process
    assert "kill -TERM" in err and "--replicas=0" in err  # how to stop them
    assert err.count("\n") == 1  # one clear line
    plan = replay(p, "--from-earliest", "--dry-run")  # a dry run still shows the plan, and the refusal
    assert plan.returncode == 0 and "A replay now would be refused" in plan.stdout and "to reprocess" in plan.stdout
    assert p.results() == before and worker.poll() is None

    assert p.stop_all() == [0]
    wait_for(lambda: members(kafka, p.group) == 0, 30, "the group to empty")
    positions = p.positions()
    crashed = replay(p, "--from-earliest", "--yes", env={"EVENTFLEET_FAULT": "in_replay_reset@1"})
    assert crashed.returncode == -signal.SIGKILL  # inside the reset transaction: nothing changed
    assert p.results() == before and p.positions() == positions and replay_filters(p) == {}
    done = replay(p, "--from-earliest", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_exact(p, ground_truth(events), ends)


def small_steps(p) -> Path:
    """The pipeline read in small steps: a flush after every batch of what one small fetch per
    partition brings, so a crash after the first flush lands near the start of a replay, however
    fast the machine is at that moment."""
    doc = tomllib.loads(p.path.read_text())
    doc["flush"] = {"interval": "1ms"}
    small = {"max.partition.fetch.bytes": 4096, "queued.min.messages": 50}
    doc["kafka"]["config"] = {**doc["kafka"].get("config", {}), **small}
    path = p.path.with_name("small-steps.toml")
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def test_crash_in_the_middle_of_a_replay_then_rerun(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=4, flush="200ms")
    events = events_around_floor(160_000, 4, seed=36)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    truth = ground_truth(events)
    run_live(p, kafka, ends)
    damage(p, FLOOR)
    before = p.results()

    crashed = replay(p, "--from-timestamp", str(FROM), "--yes", env={"EVENTFLEET_FAULT": "after_sink_commit@1"},
                     config=small_steps(p))  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    positions, filters = p.positions(), replay_filters(p)
    assert filters and all(f == (FLOOR, ends[q]) for q, f in filters.items())
    # a filter is deleted by the flush that moves its partition past it (a fast partition may have)
    assert all(positions[q][0] >= ends[q] for q in range(4) if q not in filters), (positions, filters)
    midway = [q for q in range(4) if positions[q][0] < ends[q]]
    assert midway  # the crash came in the middle: partitions below the offset the replay started from
    # events that a rerun resuming its filter from the crash point would count twice
    kept = kept_window_offsets(events, FLOOR)
    assert any(o >= positions[q][0] for q in midway for o in kept.get(q, [])), (positions, kept)
    assert p.results() != before

    wait_for(lambda: members(kafka, p.group) == 0, 60, "the killed replay's member to expire")
    rerun = replay(p, "--from-timestamp", str(FROM), "--yes")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_replayed(p, before, truth, FLOOR, ends)
    # a later start than an unfinished replay would not be exact: refused
    crashed = replay(p, "--from-timestamp", str(FROM), "--yes", env={"EVENTFLEET_FAULT": "after_sink_commit@1"})
    assert crashed.returncode == -signal.SIGKILL
    wait_for(lambda: members(kafka, p.group) == 0, 60, "the killed replay's member to expire")
    later = replay(p, "--from-timestamp", str(FLOOR + WINDOW_MS), "--yes")
    assert later.returncode == 2 and "in the middle of a replay from" in later.stderr
    # the live fleet continues an interrupted replay exactly: the filters are stored with the positions
    run_live(p, kafka, ends)
    assert_replayed(p, before, truth, FLOOR, ends)


@pytest.mark.parametrize("start", ["earliest", "timestamp"])
def test_shadow_replay_then_swap(kafka: Kafka, pipeline, start: str) -> None:
    p = pipeline(partitions=4)
    events = events_around_floor(80_000, 4, seed=37)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    truth = ground_truth(events)
    live = p.start_worker()
    p.wait_caught_up(ends)
    last = max(p.results())  # damage one live row from FLOOR on: the shadow recomputes it
    p.execute([(f"UPDATE {p.table} SET events = events + 1 WHERE {KEY}", last)])
    live_before, positions_before = p.results(), p.positions()
    name = shadow_name(p)
    shadow_group = f"{p.group}.replay.{name}"

    args = ["--from-earliest"] if start == "earliest" else ["--from-timestamp", str(FROM)]
    done = replay(p, *args, "--into", name, "--yes")  # the live worker keeps running
    assert done.returncode == 0, done.stderr[-3000:]
    assert live.poll() is None
    assert p.results() == live_before and p.positions() == positions_before  # the live table: untouched
    assert kafka.committed(p.topic, p.group, 4) == ends  # the live group: untouched
    shadow = p.with_table(name, shadow_group)
    assert shadow.results() == truth.rows  # exact: recomputed, or copied from the (exact) live rows
    assert {q: v[0] for q, v in shadow.positions().items()} == ends
    assert sum(v[1] for v in shadow.positions().values()) == truth.late
    assert kafka.committed(p.topic, shadow_group, 4) == ends

    refused = replay(p, "--into", name, "--swap", "--yes")
    assert refused.returncode == 2 and f"consumer group '{p.group}' has 1 active member(s)" in refused.stderr
    assert p.stop_all() == [0]
    more = generate(20_000, 4, seed=38, start_ms=START + 60_000)  # arrives after the shadow's end
    kafka.produce(p.topic, more)
    wait_for(lambda: members(kafka, p.group) == 0, 30, "the group to empty")

    swapped = replay(p, "--into", name, "--swap", "--yes")
    assert swapped.returncode == 0, swapped.stderr[-3000:]
    assert p.results() == truth.rows
    assert {q: v[0] for q, v in p.positions().items()} == ends
    assert kafka.committed(p.topic, p.group, 4) == ends
    assert shadow.results() == live_before  # the previous live table, kept under the shadow's name
    assert {q: v[0] for q, v in shadow.positions().items()} == ends

    all_ends = kafka.ends(p.topic)
    run_live(p, kafka, all_ends)  # the live fleet continues from the shadow's positions
    assert_exact(p, ground_truth(events + more), all_ends)
    assert kafka.committed(p.topic, p.group, 4) == all_ends


def test_replay_of_a_topic_written_in_transactions_finishes(kafka: Kafka, pipeline) -> None:
    """A transactional producer leaves a commit marker at the end of each partition, which no
    consumer receives: the replay must still see it has read everything, and stop."""
    from confluent_kafka import Producer

    from .conftest import encode

    p = pipeline(partitions=4)
    events: list[tuple[int, Any]] = generate(20_000, 4, seed=37)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{p.topic}"})
    producer.init_transactions(30)
    last: dict[int, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        last[msg.partition()] = max(last.get(msg.partition(), -1), msg.offset())

    for chunk in (events[:10_000], events[10_000:]):  # markers mid-stream and at the end
        producer.begin_transaction()
        for partition, record in chunk:
            producer.produce(p.topic, encode(record), partition=partition, on_delivery=delivered)
            producer.poll(0)
        producer.commit_transaction(30)
    ends = {q: o + 1 for q, o in last.items()}  # after the last event: the marker is not delivered
    assert all(kafka.ends(p.topic)[q] > end for q, end in ends.items())
    run_live(p, kafka, ends)
    truth = ground_truth(events)
    damage(p, START)

    done = replay(p, "--from-earliest", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replayed 20,000 events in" in done.stdout
    assert_exact(p, truth, ends)
