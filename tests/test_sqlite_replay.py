"""Unit tests of the SQLite sink's replay side: checkpoints, filters, reset, clone and swap."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.config import Pipeline
from consumer.replay import shadow_pipeline
from consumer.sinks import Position, PositionWrite, ReplayableSink, ReplayFilter, ReplayReset, replayable
from consumer.sinks.sqlite import CHECKPOINT_DENSE_MS, CHECKPOINT_SPARSE_MS, SqliteSink
from consumer.window import NO_WATERMARK

from .test_sqlite_sink import SIZE, TABLE, _pipeline, _pos, _positions, _rows

T = "ad-events"


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return _pipeline(tmp_path)


@pytest.fixture
def sink(pipeline: Pipeline) -> Iterator[SqliteSink]:
    s = SqliteSink(pipeline)
    yield s
    s.close()


def _checkpoints(pipeline: Pipeline, table: str = TABLE) -> list[tuple[Any, ...]]:
    with sqlite3.connect(pipeline.sink.path) as db:
        return db.execute(
            "SELECT consumer_group, partition, watermark_window, next_offset, watermark, late_events, invalid_events "
            f"FROM {table}_checkpoints ORDER BY consumer_group, partition, next_offset"
        ).fetchall()


def _flush(sink: SqliteSink, p: Position, expected: int | None, passed: list[Position] | None = None) -> None:
    sink.write("g", {}, [PositionWrite(p, expected, passed or [])], [])


def test_the_sqlite_sink_is_replayable(sink: SqliteSink) -> None:
    assert isinstance(sink, ReplayableSink)
    assert replayable(sink, "sqlite") is sink


def test_a_sink_without_replay_is_refused_clearly() -> None:
    class WriteOnly:  # a sink implementing only the Sink protocol
        def read_positions(self, group: str, partitions: list[Any]) -> dict[Any, Position]:
            return {}

        def write(self, *args: Any) -> None: ...

        def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
            return [], []

        def close(self) -> None: ...

    with pytest.raises(Exception, match=r"sink.type.*the kafka sink does not support replay"):
        replayable(WriteOnly(), "kafka")  # type: ignore[arg-type]


def test_checkpoints_keep_the_last_position_per_window_of_the_watermark(pipeline: Pipeline, sink: SqliteSink) -> None:
    _flush(sink, _pos(0, 10, 5_000), None, [_pos(0, 4, 1_000, 1)])
    _flush(sink, _pos(0, 20, SIZE + 1), 10, [_pos(0, 15, SIZE - 1, 2)])  # 15 replaces 10 in window 0
    _flush(sink, _pos(1, 3, NO_WATERMARK, 0, 3), None)  # only invalid messages so far
    assert _checkpoints(pipeline) == [
        ("g", 0, 0, 15, SIZE - 1, 2, 0),
        ("g", 0, SIZE, 20, SIZE + 1, 0, 0),
        ("g", 1, NO_WATERMARK, 3, NO_WATERMARK, 0, 3),
    ]
    # the same states written again (by a replay) never move a checkpoint back
    _flush(sink, _pos(0, 22, SIZE + 5), 20, [_pos(0, 12, SIZE - 10)])
    assert ("g", 0, 0, 15, SIZE - 1, 2, 0) in _checkpoints(pipeline)


def test_replay_checkpoints_finds_the_last_below_the_floor_and_the_offset_limit(sink: SqliteSink) -> None:
    for offset, wm, prev in ((10, 100, None), (20, SIZE - 1, 10), (30, SIZE, 20), (40, 3 * SIZE, 30)):
        _flush(sink, _pos(0, offset, wm, late=offset // 10), prev)
    find = sink.replay_checkpoints
    assert find("g", SIZE, {(T, 0): 99}) == {(T, 0): _pos(0, 20, SIZE - 1, late=2)}
    assert find("g", SIZE + 1, {(T, 0): 99}) == {(T, 0): _pos(0, 30, SIZE, late=3)}  # watermark < floor, exactly
    assert find("g", 10 * SIZE, {(T, 0): 35}) == {(T, 0): _pos(0, 30, SIZE, late=3)}  # never past the offset limit
    assert find("g", 100, {(T, 0): 99, (T, 1): 99}) == {}  # none below: the caller starts from the earliest
    assert find("other", SIZE, {(T, 0): 99}) == {}


def test_old_checkpoints_are_thinned(pipeline: Pipeline, sink: SqliteSink) -> None:
    step = 10 * SIZE  # 10-minute steps of the watermark, 1-minute windows
    wms = list(range(0, CHECKPOINT_DENSE_MS + 6 * CHECKPOINT_SPARSE_MS, step))
    prev = None
    for i, wm in enumerate(wms):
        _flush(sink, _pos(0, i + 1, wm), prev)
        prev = i + 1
    kept = {(r[3], r[4]) for r in _checkpoints(pipeline)}
    cutoff = wms[-1] - CHECKPOINT_DENSE_MS
    old = sorted(wm for _, wm in kept if wm < cutoff)
    hours = {wm // CHECKPOINT_SPARSE_MS for wm in old}
    assert len(old) == len(hours)  # one per hour below the cutoff ...
    assert {wm // CHECKPOINT_SPARSE_MS for wm in wms if wm < cutoff} == hours  # ... in every hour
    assert all(max(w for w in wms if w < cutoff and w // CHECKPOINT_SPARSE_MS == h) in old for h in hours)  # the last
    assert {wm for _, wm in kept if wm >= cutoff} == {wm for wm in wms if wm >= cutoff}  # the recent ones: all


def test_positions_carry_the_filter_until_they_pass_it(pipeline: Pipeline, sink: SqliteSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 5, 5, 5], (SIZE, "c", "click"): [1, 6, 6, 6]}, [PositionWrite(_pos(0, 50, 99), None)], [])
    reset = ReplayReset(SIZE, [Position(T, 0, 20, 7, 1, 0, ReplayFilter(SIZE, 50)), _pos(1, 0, NO_WATERMARK)])
    assert sink.replay_reset("g", reset) == 1  # the row of window SIZE is deleted
    assert _rows(pipeline) == {key: (SIZE, 1, 5, 5, 5)}
    assert _positions(pipeline) == {("g", T, 0): (20, 7, 1, 0), ("g", T, 1): (0, NO_WATERMARK, 0, 0)}
    got = sink.read_positions("g", [(T, 0), (T, 1)])
    assert got[(T, 0)].replay == ReplayFilter(SIZE, 50) and got[(T, 1)].replay is None
    _flush(sink, _pos(0, 49, 8), 20)
    assert sink.read_positions("g", [(T, 0)])[(T, 0)].replay == ReplayFilter(SIZE, 50)
    _flush(sink, _pos(0, 50, 9), 49)  # reached: the filter is gone
    assert sink.read_positions("g", [(T, 0)])[(T, 0)].replay is None
    with sqlite3.connect(pipeline.sink.path) as db:
        assert db.execute(f"SELECT count(*) FROM {TABLE}_replay").fetchone() == (0,)


def test_a_reset_from_the_earliest_offsets_forgets_checkpoints_and_rows(pipeline: Pipeline, sink: SqliteSink) -> None:
    sink.write("g", {(-SIZE, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 50, 99), None)], [])
    sink.write("other", {}, [PositionWrite(_pos(0, 7, 1), None)], [])
    reset = ReplayReset(NO_WATERMARK, [Position(T, 0, 0, NO_WATERMARK, replay=ReplayFilter(NO_WATERMARK, 50))], True)
    sink.replay_reset("g", reset)
    assert _rows(pipeline) == {}
    assert [r[0] for r in _checkpoints(pipeline)] == ["other"]
    assert sink.replay_windows(NO_WATERMARK) == (0, 0)


def test_replay_windows_counts_windows_and_rows(sink: SqliteSink) -> None:
    rows = {(w, c, "click"): [1, 1, 1, 1] for w in (0, SIZE, 2 * SIZE) for c in ("a", "b")}
    sink.write("g", rows, [], [])
    assert sink.replay_windows(SIZE) == (2, 4)
    assert sink.replay_windows(NO_WATERMARK) == (3, 6)


def test_clone_copies_a_consistent_snapshot_under_another_group(tmp_path: Path, pipeline: Pipeline) -> None:
    live = SqliteSink(pipeline)
    try:
        rows = {(0, "c", "click"): [1, 5, 5, 5], (SIZE, "c", "click"): [2, 6, 1, 5]}
        live.write("g", rows, [PositionWrite(_pos(0, 9, SIZE + 3), None, [_pos(0, 4, 10)])], [])
        live.write("x", {}, [PositionWrite(_pos(0, 77, 1), None)], [])
        shadow = SqliteSink(shadow_pipeline(pipeline, "shadow"))
        live.replay_clone("shadow", "g", "g.replay.shadow", SIZE)
        assert shadow.results()[1] == [(0, SIZE, "c", "click", 1, 5, 5, 5)]  # windows before SIZE only
        assert shadow.read_positions("g.replay.shadow", [(T, 0)]) == {(T, 0): _pos(0, 9, SIZE + 3)}
        assert shadow.read_positions("x", [(T, 0)]) == {}  # only the group asked for
        assert {r[0] for r in _checkpoints(pipeline, "shadow")} == {"g.replay.shadow"}
        with pytest.raises(Exception, match="not empty"):
            live.replay_clone("shadow", "g", "g.replay.shadow", SIZE)
        shadow.close()
    finally:
        live.close()


def test_swap_exchanges_tables_and_groups(tmp_path: Path, pipeline: Pipeline) -> None:
    live = SqliteSink(pipeline)
    shadow = SqliteSink(shadow_pipeline(pipeline, "shadow"))
    try:
        live.write("g", {(0, "old", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 5, 1), None)], [])
        shadow.write("g.s", {(0, "new", "click"): [2, 2, 2, 2]}, [PositionWrite(_pos(0, 9, 2), None)], [])
        live.replay_swap("shadow", "g", "g.s")
        assert live.results()[1] == [(0, SIZE, "new", "click", 2, 2, 2, 2)]
        assert live.read_positions("g", [(T, 0)]) == {(T, 0): _pos(0, 9, 2)}
        assert live.read_positions("g.s", [(T, 0)]) == {}
        assert shadow.results()[1] == [(0, SIZE, "old", "click", 1, 1, 1, 1)]
        assert shadow.read_positions("g.s", [(T, 0)]) == {(T, 0): _pos(0, 5, 1)}
        assert live.replay_table_exists("shadow") and not live.replay_table_exists("nothing")
        # the live sink keeps working on the swapped-in table, compare-and-set included
        live.write("g", {(0, "new", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 10, 3), 9)], [])
        assert live.results()[1] == [(0, SIZE, "new", "click", 3, 3, 1, 2)]
    finally:
        live.close()
        shadow.close()
