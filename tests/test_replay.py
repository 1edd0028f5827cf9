"""Unit tests of replay: option parsing, the per-partition plan, and the worker's replay filter.

The filter test runs the real hot loop (Worker.process) over in-memory messages and compares
a replay from a mid-stream checkpoint with plain-Python ground truth over the whole stream.
"""

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from fastavro import parse_schema, schemaless_writer
from prometheus_client import CollectorRegistry

from consumer.aggregate import merge
from consumer.config import Pipeline, load
from consumer.errors import ConfigError
from consumer.metrics import WorkerMetrics
from consumer.replay_plan import ReplayRefused, parse_offsets, parse_timestamp, plan_partition
from consumer.sinks import open_sink
from consumer.state import PartitionState
from consumer.testing import LocalBroker, LocalSource, MockedClock
from consumer.types import Position, ReplayFilter
from consumer.window import NO_WATERMARK
from consumer.worker import Worker

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
SIZE, GRACE = 10_000, 5_000
TP = ("t", 0)

# ---------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-20T10:00:00Z", 1_795_168_800_000),
        ("2026-11-20T12:00:00+02:00", 1_795_168_800_000),
        ("2026-11-20T10:00:00", 1_795_168_800_000),  # no zone: UTC
        ("2026-11-20T10:00:00.250Z", 1_795_168_800_250),
        ("1795168800000", 1_795_168_800_000),
        (" 42 ", 42),
    ],
)
def test_timestamps(text: str, ms: int) -> None:
    assert parse_timestamp(text) == ms


def test_a_bad_timestamp_names_the_option_and_the_forms() -> None:
    with pytest.raises(ConfigError, match=r"--from-timestamp.*'yesterday'.*2026-11-20T10:00:00Z"):
        parse_timestamp("yesterday")


def test_offsets() -> None:
    assert parse_offsets("0:1200, 1:900") == ((None, 0, 1200), (None, 1, 900))
    assert parse_offsets("ad-events:3:7,other.t:0:0") == (("ad-events", 3, 7), ("other.t", 0, 0))
    for bad in ("", "0", "0:x", "a:b:c:d", ":1:2", "0:-5"):
        with pytest.raises(ConfigError, match="--from-offsets"):
            parse_offsets(bad)


def test_a_shadow_name_too_long_for_postgresql_is_refused(tmp_path: Path) -> None:
    from consumer.replay import check_shadow_name

    from .test_postgres_sink import _pipeline as postgres_pipeline

    p = postgres_pipeline(tmp_path, "host=db.example", "ad_stats")
    with pytest.raises(ConfigError, match=r"--into.*_checkpoints must fit in 63 bytes") as info:
        check_shadow_name(p, None, "s" * 52)  # type: ignore[arg-type]  # refused before the sink is asked
    assert "at most 51 characters" in str(info.value)


# ---------------------------------------------------------------------------------------------
# the plan of one partition


def test_restarts_from_the_checkpoint_with_its_state_and_filters_up_to_the_position() -> None:
    cp = Position("t", 0, 40, 123, 3, 1)
    plan = plan_partition(TP, Position("t", 0, 100, 999, 9, 2), cp, 0, 150, SIZE)
    assert plan.new == Position("t", 0, 40, 123, 3, 1, ReplayFilter(SIZE, 100))
    assert plan.to_reprocess == 110 and "checkpoint" in plan.origin


def test_a_rerun_after_a_crash_keeps_the_first_until() -> None:
    crashed = Position("t", 0, 60, 500, 4, 0, ReplayFilter(SIZE, 100))  # between the checkpoint and 100
    plan = plan_partition(TP, crashed, Position("t", 0, 40, 123, 3, 1), 0, 150, SIZE)
    assert plan.new.replay == ReplayFilter(SIZE, 100)
    earlier = plan_partition(TP, crashed, Position("t", 0, 10, 5, 0, 0), 0, 150, 0)  # from an earlier window: fine
    assert earlier.new.replay == ReplayFilter(0, 100)
    with pytest.raises(ReplayRefused, match=r"t\[0\] is in the middle of a replay from .* \(at offset 60 of 100\)"):
        plan_partition(TP, crashed, Position("t", 0, 50, 600, 4, 0), 0, 150, 2 * SIZE)


def test_without_a_checkpoint_it_starts_like_a_fresh_run() -> None:
    plan = plan_partition(TP, Position("t", 0, 100, 999), None, 0, 150, SIZE)
    assert plan.new == Position("t", 0, 0, NO_WATERMARK, 0, 0, ReplayFilter(SIZE, 100))
    never = plan_partition(TP, None, None, 30, 150, SIZE)  # never read: no filter
    assert never.new == Position("t", 0, 30, NO_WATERMARK)
    with pytest.raises(ReplayRefused, match="no longer holds its offsets below 30"):
        plan_partition(TP, Position("t", 0, 100, 999), None, 30, 150, SIZE)
    with pytest.raises(ReplayRefused, match="retains offsets from 50 only"):
        plan_partition(TP, Position("t", 0, 100, 999), Position("t", 0, 40, 1), 50, 150, SIZE)


def test_from_the_earliest_offsets_everything_is_reread_and_only_dead_letters_are_filtered() -> None:
    plan = plan_partition(TP, Position("t", 0, 100, 999, 9, 2), None, 7, 150, NO_WATERMARK)
    assert plan.new == Position("t", 0, 7, NO_WATERMARK, 0, 0, ReplayFilter(NO_WATERMARK, 100))
    unfinished = Position("t", 0, 60, 500, 4, 0, ReplayFilter(5 * SIZE, 100))  # any unfinished replay
    assert plan_partition(TP, unfinished, None, 0, 150, NO_WATERMARK).new.replay == ReplayFilter(NO_WATERMARK, 100)


# ---------------------------------------------------------------------------------------------
# the worker's replay filter, over the real hot loop


class Msg:
    """The accessors of a consumed Kafka message that the worker reads."""

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._partition, self._offset, self._value = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> None:
        return None

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"], "group_id": "g"},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": f"{SIZE}ms", "grace": f"{GRACE}ms", "time_field": "ts"},
        "aggregate": {"group_by": ["campaign_id"], "metrics": {"n": "count", "s": "sum:price_micros",
                                                               "lo": "min:price_micros", "hi": "max:price_micros"}},
        "sink": {"type": "sqlite", "path": str(tmp_path / "sink.db"), "table": "stats"},
    }  # fmt: skip
    path = tmp_path / "p.toml"
    path.write_text(tomli_w.dumps(doc))
    return load(path)


def stream(seed: int, n: int) -> list[list[tuple[Any, bytes, dict[str, Any] | None]]]:
    """Two partitions of (event time, value, record): 10% of events up to 30 s late, 1% undecodable
    (time and record None)."""
    schema = json.loads(SCHEMA.read_text())
    schema["fields"][1]["type"] = "long"
    parsed = parse_schema(schema)
    rng = random.Random(seed)
    out: list[list[tuple[Any, bytes, dict[str, Any] | None]]] = [[], []]
    for i in range(n):
        p = i % 2
        if rng.random() < 0.01:
            out[p].append((None, b"\xff\xff", None))
            continue
        t = 1_000_000 + (i // 2) * 10 - (rng.randrange(30_000) if rng.random() < 0.1 else 0)
        record = {"event_id": str(i), "ts": t, "campaign_id": f"c{rng.randrange(4)}", "ad_id": "a",
                  "event_type": "click", "user_id": 1, "country": "DE", "device": "mobile",
                  "price_micros": rng.randrange(1000)}  # fmt: skip
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, record)
        out[p].append((t, buf.getvalue(), record))
    return out


Stream = list[list[tuple[Any, bytes, Any]]]


def truth(parts: Stream, upto: list[int]) -> tuple[dict[Any, list[int]], list[tuple[int, int, int]]]:
    """Plain Python: the aggregates over each partition's first ``upto`` messages, and each
    partition's state after them (watermark, late, invalid)."""
    rows: dict[Any, list[int]] = {}
    states = []
    for p, events in enumerate(parts):
        wm, late, invalid = NO_WATERMARK, 0, 0
        for t, _, r in events[: upto[p]]:
            if r is None:
                invalid += 1
                continue
            start = t - t % SIZE
            wm = max(wm, t)
            if start + SIZE + GRACE <= wm:
                late += 1
                continue
            price = r["price_micros"]
            row = rows.setdefault((start, r["campaign_id"]), [0, 0, price, price])
            row[0] += 1
            row[1] += price
            row[2] = min(row[2], price)
            row[3] = max(row[3], price)
        states.append((wm, late, invalid))
    return rows, states


def make_worker(pipeline: Pipeline) -> Worker:
    """A worker on an in-memory consumer (unused: the test hands it batches) and the real sink."""
    clock = MockedClock()
    return Worker(pipeline, LocalSource(LocalBroker(clock), "g"), open_sink(pipeline), clock,
                  WorkerMetrics(CollectorRegistry()))  # fmt: skip


def feed(worker: Worker, parts: list[list[tuple[int, Any]]], starts: list[int], rng: random.Random) -> None:
    """Every message from each partition's start offset, interleaved, in batches of random size."""
    queue = [Msg(p, o, parts[p][o][1]) for p in range(2) for o in range(starts[p], len(parts[p]))]
    queue.sort(key=lambda m: (m.offset(), m.partition()))
    while queue:
        k = rng.randint(1, 300)
        worker.process(queue[:k])
        queue = queue[k:]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_replay_from_a_checkpoint_matches_a_fresh_run(pipeline: Pipeline, seed: int) -> None:
    rng = random.Random(seed)
    parts = stream(seed, 6_000)
    ends = [len(x) for x in parts]
    floor = 1_000_000 + 12_000 // SIZE * SIZE + SIZE  # a window in the middle of the stream
    before = [rng.randrange(ends[p] * 3 // 4, ends[p]) for p in range(2)]  # positions before the replay (P)
    kept, _ = truth(parts, before)
    kept = {k: v for k, v in kept.items() if k[0] < floor}  # the rows a replay keeps
    starts = []  # the last offset whose watermark before it is below the floor (a checkpoint)
    for p in range(2):
        wm, s = NO_WATERMARK, 0
        for offset, (t, _, _) in enumerate(parts[p]):
            if wm >= floor or offset > before[p]:
                break
            s = offset
            wm = max(wm, t) if t is not None else wm
        starts.append(s)
    _, at_start = truth(parts, starts)

    worker = make_worker(pipeline)
    for p in range(2):
        wm, late, invalid = at_start[p]
        worker.state.parts[("t", p)] = PartitionState.from_position(
            Position("t", p, starts[p], wm, late, invalid, ReplayFilter(floor, before[p]))
        )
    assert worker.state.check_replaying()
    feed(worker, parts, starts, rng)
    assert not worker.state.replaying  # every filter passed

    full, states = truth(parts, ends)
    got = dict(kept)
    for key, partial in worker.state.partials.items():
        got[key] = merge(pipeline.aggregate.metrics, got[key], partial) if key in got else partial
    assert got == full
    assert [(q.late_events, q.invalid_events) for q in worker.state.parts.values()] == [s[1:] for s in states]
    assert sorted((r.partition, r.offset) for r in worker.state.rejects) == sorted(
        (p, o) for p in range(2) for o in range(before[p], ends[p]) if parts[p][o][0] is None
    )  # dead letters only for messages read for the first time
    worker.sink.close()


def test_a_filter_in_one_partition_changes_nothing_in_the_others(pipeline: Pipeline) -> None:
    parts = stream(9, 4_000)
    results = []
    for replaying in (False, True):
        worker = make_worker(pipeline)
        for p in range(2):
            worker.state.parts[("t", p)] = PartitionState("t", p)
        if replaying:  # another partition has a filter; these two have none
            worker.state.parts[("t", 9)] = PartitionState("t", 9, replay_until=10**9)
            assert worker.state.check_replaying()
        feed(worker, parts, [0, 0], random.Random(4))
        states = [(q.watermark, q.late_events, q.invalid_events, q.next_offset) for q in worker.state.parts.values()]
        results.append((worker.state.partials, states[:2], len(worker.state.rejects)))
        assert worker.state.replaying == replaying
        worker.sink.close()
    assert results[0] == results[1]
    assert results[0][0] == truth(parts, [len(x) for x in parts])[0]
