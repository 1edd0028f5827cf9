"""Unit tests of the SQLite sink: merging, compare-and-set positions, rejects, reopening."""

import multiprocessing
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from consumer.config import Pipeline, load
from consumer.errors import PositionConflict, SinkError
from consumer.sinks.sqlite import SqliteSink
from consumer.types import Position, PositionWrite, Reject

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
SIZE = 60_000
TABLE = "ad_stats"
METRICS = {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "hi": "max:price_micros"}


def _pipeline(tmp_path: Path, metrics: dict[str, str] | None = None, name: str = "pipeline.toml") -> Pipeline:
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": "g"},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": "1m", "grace": "10s", "time_field": "ts"},
        "aggregate": {"group_by": ["campaign_id", "event_type"], "metrics": metrics or METRICS},
        "sink": {"type": "sqlite", "path": "sink.db", "table": TABLE},
    }
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return _pipeline(tmp_path)


@pytest.fixture
def sink(pipeline: Pipeline) -> Iterator[SqliteSink]:
    s = SqliteSink(pipeline)
    yield s
    s.close()


def _rows(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Aggregates as read by a separate plain sqlite3 connection."""
    db = sqlite3.connect(pipeline.sink.path)
    try:
        rows = db.execute(
            f"SELECT window_start, window_end, campaign_id, event_type, events, spend, lo, hi FROM {TABLE}"
        ).fetchall()
    finally:
        db.close()
    return {(r[0], r[2], r[3]): (r[1], *r[4:]) for r in rows}


def _positions(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    db = sqlite3.connect(pipeline.sink.path)
    try:
        rows = db.execute(
            "SELECT consumer_group, topic, partition, next_offset, watermark, late_events, invalid_events "
            f"FROM {TABLE}_positions"
        ).fetchall()
    finally:
        db.close()
    return {r[:3]: r[3:] for r in rows}


def _rejects(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(pipeline.sink.path)
    try:
        return db.execute(f"SELECT * FROM {TABLE}_rejects ORDER BY topic, partition, kafka_offset").fetchall()
    finally:
        db.close()


def _pos(partition: int, offset: int, watermark: int = 0, late: int = 0, invalid: int = 0) -> Position:
    return Position("ad-events", partition, offset, watermark, late, invalid)


def _partial(prices: list[int]) -> list[int]:
    return [len(prices), sum(prices), min(prices), max(prices)]


# ---------------------------------------------------------------------------------------------
# aggregates


def test_write_merges_partials_across_calls(pipeline: Pipeline, sink: SqliteSink) -> None:
    rng = random.Random(11)
    seen: dict[tuple[Any, ...], list[int]] = {}
    keys = [(ws, c, t) for ws in (-SIZE, 0, SIZE, 5 * SIZE) for c in ("c1", "c2") for t in ("click", "impression")]
    for _ in range(25):
        partials = {}
        for key in rng.sample(keys, rng.randint(1, len(keys))):
            prices = [rng.randint(-1000, 10**9) for _ in range(rng.randint(1, 5))]
            seen.setdefault(key, []).extend(prices)
            partials[key] = _partial(prices)
        sink.write("g", partials, [], [])
    expected = {
        key: (key[0] + SIZE, len(prices), sum(prices), min(prices), max(prices)) for key, prices in seen.items()
    }
    assert _rows(pipeline) == expected


def test_min_max_compare_not_overwrite(pipeline: Pipeline, sink: SqliteSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 50, 50, 50]}, [], [])
    sink.write("g", {key: [1, 70, 70, 70]}, [], [])
    sink.write("g", {key: [1, 20, 20, 20]}, [], [])
    sink.write("g", {key: [1, 60, 60, 60]}, [], [])
    assert _rows(pipeline) == {key: (SIZE, 4, 200, 20, 70)}


def test_results_ordered_by_window_then_groups(sink: SqliteSink) -> None:
    sink.write("g", {(SIZE, "a", "click"): [1, 1, 1, 1], (0, "b", "click"): [1, 2, 2, 2]}, [], [])
    sink.write("g", {(0, "a", "impression"): [1, 3, 3, 3], (0, "a", "click"): [1, 4, 4, 4]}, [], [])
    columns, rows = sink.results()
    assert columns == ["window_start", "window_end", "campaign_id", "event_type", "events", "spend", "lo", "hi"]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        (0, "a", "click"),
        (0, "a", "impression"),
        (0, "b", "click"),
        (SIZE, "a", "click"),
    ]


# ---------------------------------------------------------------------------------------------
# positions: compare-and-set


def test_first_write_inserts_position(pipeline: Pipeline, sink: SqliteSink) -> None:
    sink.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 10, 1234, 2, 1), None)], [])
    assert _positions(pipeline) == {("g", "ad-events", 0): (10, 1234, 2, 1)}
    assert sink.read_positions("g", [("ad-events", 0)]) == {("ad-events", 0): _pos(0, 10, 1234, 2, 1)}


def test_second_insert_conflicts_and_changes_nothing(pipeline: Pipeline, sink: SqliteSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 10, 100), None)], [])
    before = (_rows(pipeline), _positions(pipeline), _rejects(pipeline))

    other = SqliteSink(pipeline)
    try:
        reject = Reject("ad-events", 0, 3, 1, None, b"x", "bad")
        with pytest.raises(PositionConflict) as info:
            other.write(
                "g",
                {key: [3, 300, 1, 200], (SIZE, "z", "click"): [1, 1, 1, 1]},
                [PositionWrite(_pos(0, 20, 500), None)],
                [reject],
            )
        assert info.value.partitions == [("ad-events", 0)]
    finally:
        other.close()
    assert (_rows(pipeline), _positions(pipeline), _rejects(pipeline)) == before


def test_conflict_on_one_partition_rolls_back_the_others(pipeline: Pipeline, sink: SqliteSink) -> None:
    sink.write("g", {}, [PositionWrite(_pos(1, 10), None)], [])
    before = (_rows(pipeline), _positions(pipeline))
    with pytest.raises(PositionConflict) as info:
        sink.write(
            "g",
            {(0, "c", "click"): [1, 5, 5, 5]},
            [
                PositionWrite(_pos(0, 7), None),  # would insert
                PositionWrite(_pos(1, 30), 25),  # stale: the row holds 10
                PositionWrite(_pos(2, 4), None),  # would insert
            ],
            [Reject("ad-events", 0, 1, 1, b"k", b"v", "e")],
        )
    assert info.value.partitions == [("ad-events", 1)]
    assert (_rows(pipeline), _positions(pipeline)) == before
    assert _rejects(pipeline) == []


def test_stale_update_conflicts_and_rolls_back(pipeline: Pipeline, sink: SqliteSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 10, 100), None)], [])
    sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(_pos(0, 20, 200), 10)], [])
    assert _rows(pipeline) == {key: (SIZE, 2, 12, 5, 7)}
    assert _positions(pipeline) == {("g", "ad-events", 0): (20, 200, 0, 0)}

    with pytest.raises(PositionConflict):
        sink.write("g", {key: [1, 1000, 1000, 1000]}, [PositionWrite(_pos(0, 30, 300), 10)], [])
    assert _rows(pipeline) == {key: (SIZE, 2, 12, 5, 7)}
    assert _positions(pipeline) == {("g", "ad-events", 0): (20, 200, 0, 0)}

    # the sink is usable after the conflict, with the right expected offset
    sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, 30, 300, 1), 20)], [])
    assert _rows(pipeline) == {key: (SIZE, 3, 13, 1, 7)}
    assert _positions(pipeline) == {("g", "ad-events", 0): (30, 300, 1, 0)}


def test_update_of_missing_row_conflicts(pipeline: Pipeline, sink: SqliteSink) -> None:
    with pytest.raises(PositionConflict):
        sink.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 10), 0)], [])
    assert _rows(pipeline) == {}
    assert _positions(pipeline) == {}


def test_groups_are_separate(pipeline: Pipeline, sink: SqliteSink) -> None:
    sink.write("g1", {}, [PositionWrite(_pos(0, 10), None)], [])
    sink.write("g2", {}, [PositionWrite(_pos(0, 99), None)], [])
    assert sink.read_positions("g1", [("ad-events", 0)]) == {("ad-events", 0): _pos(0, 10)}
    assert sink.read_positions("g2", [("ad-events", 0)]) == {("ad-events", 0): _pos(0, 99)}


def test_read_positions_returns_what_was_written(sink: SqliteSink) -> None:
    writes = [PositionWrite(_pos(p, 100 + p, -(2**63) if p == 2 else 1000 * p, p, 2 * p), None) for p in range(4)]
    sink.write("g", {}, writes, [])
    sink.write("g", {}, [PositionWrite(Position("other-topic", 0, 5, 6, 7, 8), None)], [])
    got = sink.read_positions("g", [("ad-events", 0), ("ad-events", 2), ("ad-events", 9), ("other-topic", 0)])
    assert got == {
        ("ad-events", 0): writes[0].new,
        ("ad-events", 2): writes[2].new,
        ("other-topic", 0): Position("other-topic", 0, 5, 6, 7, 8),
    }
    assert sink.read_positions("g", []) == {}
    assert sink.read_positions("nobody", [("ad-events", 0)]) == {}


# ---------------------------------------------------------------------------------------------
# rejects


def test_rejects_are_stored(pipeline: Pipeline, sink: SqliteSink) -> None:
    rejects = [
        Reject("ad-events", 0, 5, 1_700_000_000_000, b"key", b"\x00\xff garbage", "EOFError: truncated"),
        Reject("ad-events", 3, 0, -1, None, None, "no value"),
    ]
    sink.write("g", {}, [PositionWrite(_pos(0, 6), None)], rejects)
    assert _rejects(pipeline) == [
        ("ad-events", 0, 5, 1_700_000_000_000, b"key", b"\x00\xff garbage", "EOFError: truncated"),
        ("ad-events", 3, 0, -1, None, None, "no value"),
    ]


# ---------------------------------------------------------------------------------------------
# reopening


def test_reopen_same_pipeline_keeps_data(tmp_path: Path, pipeline: Pipeline) -> None:
    first = SqliteSink(pipeline)
    first.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 1), None)], [])
    first.close()
    again = SqliteSink(_pipeline(tmp_path, name="again.toml"))
    try:
        again.write("g", {(0, "c", "click"): [1, 6, 6, 6]}, [PositionWrite(_pos(0, 2), 1)], [])
        assert again.results()[1] == [(0, SIZE, "c", "click", 2, 11, 5, 6)]
    finally:
        again.close()


@pytest.mark.parametrize(
    "metrics",
    [
        {"events": "count", "spend": "sum:price_micros"},
        {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "top": "max:price_micros"},
        {**METRICS, "users": "sum:user_id"},
    ],
)
def test_reopen_with_other_metrics_raises(tmp_path: Path, pipeline: Pipeline, metrics: dict[str, str]) -> None:
    SqliteSink(pipeline).close()
    changed = _pipeline(tmp_path, metrics, name="changed.toml")
    with pytest.raises(SinkError, match=TABLE):
        SqliteSink(changed)


def test_reopen_with_metric_kind_changed_raises(tmp_path: Path, pipeline: Pipeline) -> None:
    SqliteSink(pipeline).close()
    changed = _pipeline(tmp_path, {**METRICS, "spend": "max:price_micros"}, name="changed.toml")
    with pytest.raises(SinkError, match=TABLE):
        SqliteSink(changed).close()


@pytest.mark.parametrize(
    "change",
    [{"spend": "sum:user_id"}, {"window_size": "30s"}],
    ids=["metric-field", "window-size"],
)
def test_reopen_with_other_field_or_window_raises(tmp_path: Path, pipeline: Pipeline, change: dict[str, str]) -> None:
    SqliteSink(pipeline).close()
    text = pipeline.source.read_text()
    if "spend" in change:
        text = text.replace('"sum:price_micros"', f'"{change["spend"]}"')
    else:
        text = text.replace('size = "1m"', f'size = "{change["window_size"]}"')
    assert text != pipeline.source.read_text()
    path = tmp_path / "changed2.toml"
    path.write_text(text)
    with pytest.raises(SinkError, match="computes"):
        SqliteSink(load(path)).close()


# ---------------------------------------------------------------------------------------------
# two workers on one file


def test_two_sinks_on_one_file_interleave(pipeline: Pipeline) -> None:
    a, b = SqliteSink(pipeline), SqliteSink(pipeline)
    try:
        rng = random.Random(5)
        seen: dict[tuple[Any, ...], list[int]] = {}
        stored = {a: None, b: None}
        partition = {a: 0, b: 1}
        offset = {a: 0, b: 0}
        for step in range(40):
            s = a if step % 2 == 0 else b
            key = (rng.choice([0, SIZE]), rng.choice(["c1", "c2"]), "click")
            prices = [rng.randint(1, 100) for _ in range(rng.randint(1, 3))]
            seen.setdefault(key, []).extend(prices)
            offset[s] += len(prices)
            s.write("g", {key: _partial(prices)}, [PositionWrite(_pos(partition[s], offset[s]), stored[s])], [])
            stored[s] = offset[s]
        expected = {k: (k[0] + SIZE, len(v), sum(v), min(v), max(v)) for k, v in seen.items()}
        assert _rows(pipeline) == expected
        assert _positions(pipeline) == {
            ("g", "ad-events", 0): (offset[a], 0, 0, 0),
            ("g", "ad-events", 1): (offset[b], 0, 0, 0),
        }
        # each sink sees the other's committed writes
        assert a.read_positions("g", [("ad-events", 1)]) == {("ad-events", 1): _pos(1, offset[b])}
        assert b.results()[1] == a.results()[1]
    finally:
        a.close()
        b.close()


def test_zombie_worker_is_fenced(pipeline: Pipeline) -> None:
    """Worker A owned partition 0, stalled; B took over from the sink's position and flushed.
    A's late flush must fail and change nothing."""
    a, b = SqliteSink(pipeline), SqliteSink(pipeline)
    try:
        key = (0, "c", "click")
        a.write("g", {key: [2, 30, 10, 20]}, [PositionWrite(_pos(0, 2, 100), None)], [])
        taken = b.read_positions("g", [("ad-events", 0)])[("ad-events", 0)]
        b.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 3, 110), taken.next_offset)], [])
        with pytest.raises(PositionConflict):
            a.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 3, 110), 2)], [])
        assert _rows(pipeline) == {key: (SIZE, 3, 35, 5, 20)}
        assert _positions(pipeline) == {("g", "ad-events", 0): (3, 110, 0, 0)}
    finally:
        a.close()
        b.close()


def _open_and_report(pipeline: Pipeline, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        SqliteSink(pipeline).close()
        results.put("ok")
    except SinkError as e:
        results.put(str(e))


def test_workers_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Workers of a fleet start at the same moment: switching a new file to WAL mode then
    failed at once with 'database is locked' (in about a third of the pairs), ignoring the
    busy timeout."""
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for i in range(30):
        (tmp_path / str(i)).mkdir()
        pipeline = _pipeline(tmp_path / str(i))
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_and_report, args=(pipeline, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join()
    assert outcomes == ["ok"] * 90
