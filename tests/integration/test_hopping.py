"""Hopping windows end to end against the real broker, with each sink: 10 s windows starting
every 2 s, so each event is in five windows and the stream's late events (up to 25 s behind,
5 s grace) are late for some of their windows only, or for all of them. The results, positions
and late (event, window) pairs are compared with the ground truth computed in plain Python
(conftest.ground_truth with the step), through SIGKILLs of workers and through a replay."""

import re

import pytest

from consumer.window import iso

from .conftest import WINDOW_MS, Kafka, assert_exact, generate, ground_truth, run_through_kills
from .test_replay import assert_replayed, damage, replay, run_live, split

pytestmark = pytest.mark.integration

STEP_MS = 2_000
START = 1_800_000_000_000  # generate()'s default first event time
FLOOR = START + 34_000  # a multiple of the step, not of the size: a window no tumbling run has


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_hopping_windows_through_sigkills_are_exact(kafka: Kafka, pipeline, sink: str) -> None:
    """Two workers while events flow; one is SIGKILLed between flushes, twice, and restarted."""
    p = pipeline(partitions=4, flush="700ms", sink=sink, step_ms=STEP_MS)
    events = generate(80_000, 4, seed=51)
    truth = ground_truth(events, STEP_MS)
    assert truth.partly_late > 100 and truth.late > truth.partly_late  # late for some windows only, or all
    ends = run_through_kills(kafka, p, events, 10.0, (1.3, 2.2), partitions=4)
    assert_exact(p, truth, ends)  # rows of every window, and the late pairs summed over the positions
    starts = {k[0] for k in truth.rows}
    assert {s % WINDOW_MS for s in starts} == set(range(0, WINDOW_MS, STEP_MS))  # windows every step


@pytest.mark.parametrize("sink", ["sqlite", "postgres"])
def test_replay_of_hopping_windows_from_a_step(kafka: Kafka, pipeline, sink: str) -> None:
    """--from-timestamp rounds up to the next window start (a multiple of the step): windows from
    there on equal the ground truth again, older windows are left as they were (damage included),
    and the replay rewinds to a checkpoint, not to the start. --from-offsets starts at the oldest
    window of the event at the offset."""
    p = pipeline(partitions=4, sink=sink, step_ms=STEP_MS)
    events = generate(120_000, 4, seed=52)
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    truth = ground_truth(events, STEP_MS)
    run_live(p, kafka, ends)
    assert_exact(p, truth, ends)
    damage(p, FLOOR)
    before = p.results()
    assert split(before, FLOOR)[0] != split(truth.rows, FLOOR)[0]  # the damage below the floor

    done = replay(p, "--from-timestamp", str(FLOOR - 1_500), "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "windows from 2027-01-15T08:00:34.000Z (the first window that starts at or after" in done.stdout
    assert_replayed(p, before, truth, FLOOR, ends)
    replayed = re.search(r"replayed ([\d,]+) events", done.stdout)
    assert replayed is not None, done.stdout
    assert 0 < int(replayed[1].replace(",", "")) < sum(ends.values()) * 0.75  # from the step's checkpoints

    records = [r for q, r in events if q == 1]
    t = records[12_345]["ts"]
    oldest = min(s for s in range(t - WINDOW_MS, t + 1) if s % STEP_MS == 0 and s <= t < s + WINDOW_MS)
    assert oldest % WINDOW_MS  # not the start of a tumbling window
    damage(p, oldest)
    before = p.results()
    done = replay(p, "--from-offsets", "1:12345", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"the earliest window of the events at those offsets is {iso(oldest)}" in done.stdout
    assert_replayed(p, before, truth, oldest, ends)
