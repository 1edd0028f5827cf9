"""Unit tests of the sinks' replay side, for SQLite and for a real PostgreSQL: checkpoints,
filters, reset, clone and swap. Rows are read back with each database's own client."""

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from consumer.config import Pipeline
from consumer.replay import shadow_pipeline
from consumer.sinks import ReplayableSink, Sink, open_sink, replayable
from consumer.sinks.sql import CHECKPOINT_DENSE_MS, CHECKPOINT_SPARSE_MS, TABLE_SUFFIXES
from consumer.types import Position, PositionWrite, ReplayFilter, ReplayReset
from consumer.window import NO_WATERMARK

from .conftest import SIZE, Target
from .test_contract import SKETCHES, _sketch_partial

T = "ad-events"


@pytest.fixture
def kind(sql_target: Target) -> str:
    return sql_target.kind


@pytest.fixture
def pipeline(sql_target: Target) -> Pipeline:
    """The pipeline of a fresh SQLite file, or of fresh tables in the test session's PostgreSQL
    (they and their shadow ``<table>_sh`` are dropped afterwards)."""
    return sql_target.pipeline()


@pytest.fixture
def pg_pipeline(pg_target: Target) -> Pipeline:
    """For the tests of what only PostgreSQL does."""
    return pg_target.pipeline()


@pytest.fixture
def sink(pipeline: Pipeline) -> Iterator[ReplayableSink]:
    s = replayable(open_sink(pipeline), pipeline.sink.type)
    yield s
    s.close()


def _shadow_name(table: str) -> str:
    return f"{table}_sh"


def _query(pipeline: Pipeline, query: str) -> list[tuple[Any, ...]]:
    """Read with a separate plain connection: what another client sees committed."""
    if pipeline.sink.type == "sqlite":
        with sqlite3.connect(pipeline.sink.path) as db:
            return db.execute(query).fetchall()
    with psycopg.connect(pipeline.sink.dsn or "") as pg:
        return pg.execute(query).fetchall()


def _rows(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = _query(
        pipeline,
        f'SELECT window_start, window_end, campaign_id, event_type, events, spend, lo, hi FROM "{pipeline.sink.table}"',
    )
    return {(r[0], r[2], r[3]): (r[1], *r[4:]) for r in rows}


def _positions(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = _query(
        pipeline,
        "SELECT consumer_group, topic, partition, next_offset, watermark, late_events, invalid_events "
        f'FROM "{pipeline.sink.table}_positions"',
    )
    return {r[:3]: r[3:] for r in rows}


def _checkpoints(pipeline: Pipeline, table: str | None = None) -> list[tuple[Any, ...]]:
    return _query(
        pipeline,
        "SELECT consumer_group, partition, watermark_window, next_offset, watermark, late_events, invalid_events "
        f'FROM "{table or pipeline.sink.table}_checkpoints" ORDER BY consumer_group, partition, next_offset',
    )


def _pos(partition: int, offset: int, watermark: int = 0, late: int = 0, invalid: int = 0) -> Position:
    return Position(T, partition, offset, watermark, late, invalid)


def _flush(sink: ReplayableSink, p: Position, expected: int | None, passed: list[Position] | None = None) -> None:
    sink.write("g", {}, [PositionWrite(p, expected, passed or [])], [])


def test_the_sink_is_replayable(sink: ReplayableSink, kind: str) -> None:
    assert isinstance(sink, ReplayableSink)
    assert replayable(sink, kind) is sink


def test_a_sink_without_replay_is_refused_clearly() -> None:
    class WriteOnly(Sink):  # a sink without the replay ability
        def read_positions(self, group: str, partitions: list[Any]) -> dict[Any, Position]:
            return {}

        def write(self, *args: Any) -> None: ...

        def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
            return [], []

        def close(self) -> None: ...

    with pytest.raises(Exception, match=r"sink.type.*the kafka sink cannot replay.*Fix: recompute into a new output"):
        replayable(WriteOnly(), "kafka")
    with pytest.raises(Exception, match=r"sink.type.*the custom sink does not support replay"):
        replayable(WriteOnly(), "custom")


def test_checkpoints_keep_the_last_position_per_window_of_the_watermark(
    pipeline: Pipeline, sink: ReplayableSink
) -> None:
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
    # a state passed and the new position in the same window of the watermark: the higher offset
    _flush(sink, _pos(0, 30, 2 * SIZE + 9), 22, [_pos(0, 28, 2 * SIZE + 1), _pos(0, 25, SIZE + 50)])
    assert _checkpoints(pipeline)[1:3] == [
        ("g", 0, SIZE, 25, SIZE + 50, 0, 0),
        ("g", 0, 2 * SIZE, 30, 2 * SIZE + 9, 0, 0),
    ]


def test_a_rolled_back_write_keeps_no_checkpoint(pipeline: Pipeline, sink: ReplayableSink) -> None:
    from consumer.errors import PositionConflict

    _flush(sink, _pos(0, 10, 5_000), None)
    with pytest.raises(PositionConflict):  # a zombie's write: its compare-and-set fails
        _flush(sink, _pos(0, 50, 3 * SIZE), 7, [_pos(0, 40, 2 * SIZE)])
    assert _checkpoints(pipeline) == [("g", 0, 0, 10, 5_000, 0, 0)]


def test_replay_checkpoints_finds_the_last_below_the_floor_and_the_offset_limit(sink: ReplayableSink) -> None:
    for offset, wm, prev in ((10, 100, None), (20, SIZE - 1, 10), (30, SIZE, 20), (40, 3 * SIZE, 30)):
        _flush(sink, _pos(0, offset, wm, late=offset // 10), prev)
    _flush(sink, _pos(1, 5, SIZE - 7), None)
    find = sink.replay_checkpoints
    assert find("g", SIZE, {(T, 0): 99}) == {(T, 0): _pos(0, 20, SIZE - 1, late=2)}
    assert find("g", SIZE + 1, {(T, 0): 99}) == {(T, 0): _pos(0, 30, SIZE, late=3)}  # watermark < floor, exactly
    assert find("g", 10 * SIZE, {(T, 0): 35}) == {(T, 0): _pos(0, 30, SIZE, late=3)}  # never past the offset limit
    assert find("g", 100, {(T, 0): 99, (T, 1): 99}) == {}  # none below: the caller starts from the earliest
    assert find("g", SIZE, {(T, 0): 99, (T, 1): 99, (T, 2): 99}) == {
        (T, 0): _pos(0, 20, SIZE - 1, late=2),
        (T, 1): _pos(1, 5, SIZE - 7),
    }
    assert find("other", SIZE, {(T, 0): 99}) == {}


def test_old_checkpoints_are_thinned(pipeline: Pipeline, sink: ReplayableSink) -> None:
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


def test_thinning_keeps_other_partitions_and_groups(pipeline: Pipeline, sink: ReplayableSink) -> None:
    step = 10 * SIZE
    wms = list(range(0, CHECKPOINT_DENSE_MS + 2 * CHECKPOINT_SPARSE_MS, step))
    sink.write("other", {}, [PositionWrite(_pos(0, 1, 0), None)], [])
    for i, wm in enumerate(wms[:30]):  # partition 1: old history, never thinned (its watermark stays old)
        _flush(sink, _pos(1, i + 1, wm), i or None)
    prev = None
    for i, wm in enumerate(wms):
        _flush(sink, _pos(0, i + 1, wm), prev)
        prev = i + 1
    rows = _checkpoints(pipeline)
    assert len([r for r in rows if r[0] == "g" and r[1] == 1]) == 30
    assert [r for r in rows if r[0] == "other"] == [("other", 0, 0, 1, 0, 0, 0)]
    assert len([r for r in rows if r[0] == "g" and r[1] == 0]) < len(wms)


def test_positions_carry_the_filter_until_they_pass_it(pipeline: Pipeline, sink: ReplayableSink) -> None:
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
    assert _query(pipeline, f'SELECT count(*) FROM "{pipeline.sink.table}_replay"') == [(0,)]


def test_a_reset_replaces_the_groups_filters_only(pipeline: Pipeline, sink: ReplayableSink) -> None:
    first = ReplayReset(SIZE, [Position(T, 0, 20, 7, replay=ReplayFilter(SIZE, 50)), _pos(1, 3, 9)])
    sink.replay_reset("g", first)
    sink.replay_reset("other", ReplayReset(SIZE, [Position(T, 0, 1, 1, replay=ReplayFilter(SIZE, 9))]))
    again = ReplayReset(2 * SIZE, [Position(T, 1, 2, 8, replay=ReplayFilter(2 * SIZE, 3)), _pos(0, 20, 7)])
    sink.replay_reset("g", again)
    got = sink.read_positions("g", [(T, 0), (T, 1)])
    assert got == {(T, 0): _pos(0, 20, 7), (T, 1): Position(T, 1, 2, 8, replay=ReplayFilter(2 * SIZE, 3))}
    assert sink.read_positions("other", [(T, 0)])[(T, 0)].replay == ReplayFilter(SIZE, 9)


def test_a_reset_from_the_earliest_offsets_forgets_checkpoints_and_rows(
    pipeline: Pipeline, sink: ReplayableSink
) -> None:
    sink.write("g", {(-SIZE, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 50, 99), None)], [])
    sink.write("other", {}, [PositionWrite(_pos(0, 7, 1), None)], [])
    reset = ReplayReset(NO_WATERMARK, [Position(T, 0, 0, NO_WATERMARK, replay=ReplayFilter(NO_WATERMARK, 50))], True)
    sink.replay_reset("g", reset)
    assert _rows(pipeline) == {}
    assert [r[0] for r in _checkpoints(pipeline)] == ["other"]
    assert sink.replay_windows(NO_WATERMARK) == (0, 0)


def test_replay_windows_counts_windows_and_rows(sink: ReplayableSink) -> None:
    rows = {(w, c, "click"): [1, 1, 1, 1] for w in (0, SIZE, 2 * SIZE) for c in ("a", "b")}
    sink.write("g", rows, [], [])
    assert sink.replay_windows(SIZE) == (2, 4)
    assert sink.replay_windows(NO_WATERMARK) == (3, 6)


def test_clone_copies_a_consistent_snapshot_under_another_group(pipeline: Pipeline) -> None:
    name = _shadow_name(pipeline.sink.table)
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    try:
        rows = {(0, "c", "click"): [1, 5, 5, 5], (SIZE, "c", "click"): [2, 6, 1, 5]}
        live.write("g", rows, [PositionWrite(_pos(0, 9, SIZE + 3), None, [_pos(0, 4, 10)])], [])
        live.write("x", {}, [PositionWrite(_pos(0, 77, 1), None)], [])
        live.replay_reset("g", ReplayReset(2 * SIZE, [Position(T, 0, 9, SIZE + 3, replay=ReplayFilter(2 * SIZE, 12))]))
        shadow = replayable(open_sink(shadow_pipeline(pipeline, name)), pipeline.sink.type)
        assert not live.replay_table_exists(name + "_nothing") and live.replay_table_exists(name)
        live.replay_clone(name, "g", "g.replay.shadow", SIZE)
        assert shadow.results()[1] == [(0, SIZE, "c", "click", 1, 5, 5, 5)]  # windows before SIZE only
        got = shadow.read_positions("g.replay.shadow", [(T, 0)])
        assert got == {(T, 0): Position(T, 0, 9, SIZE + 3, replay=ReplayFilter(2 * SIZE, 12))}  # filter included
        assert shadow.read_positions("x", [(T, 0)]) == {}  # only the group asked for
        assert {r[0] for r in _checkpoints(pipeline, name)} == {"g.replay.shadow"}
        with pytest.raises(Exception, match="not empty"):
            live.replay_clone(name, "g", "g.replay.shadow", SIZE)
        assert shadow.results()[1] == [(0, SIZE, "c", "click", 1, 5, 5, 5)]  # the refused clone changed nothing
        shadow.close()
    finally:
        live.close()


def test_clone_reads_one_snapshot_while_the_live_fleet_writes(pg_pipeline: Pipeline) -> None:
    """A writer flushes continuously: each flush adds 1 to a row and moves the position by 1, so
    in any consistent snapshot the row's count equals the position. Every clone must see that.
    (SQLite needs no such test: BEGIN IMMEDIATE serialises the clone with the writers.)"""
    pipeline = pg_pipeline
    name = _shadow_name(pipeline.sink.table)
    key = (0, "c", "click")
    writer_sink = open_sink(pipeline)
    writer_sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, 1), None)], [])
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        offset = 1
        try:
            while not stop.is_set():
                writer_sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, offset + 1), offset)], [])
                offset += 1
        except BaseException as e:
            errors.append(e)

    live = replayable(open_sink(pipeline), pipeline.sink.type)
    shadow_p = shadow_pipeline(pipeline, name)
    shadow = replayable(open_sink(shadow_p), pipeline.sink.type)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        seen = set()
        for _ in range(30):
            live.replay_clone(name, "g", "s", SIZE)
            (row,) = shadow.results()[1]
            position = shadow.read_positions("s", [(T, 0)])[(T, 0)].next_offset
            assert row[4] == position  # the count of the same flushes as the position
            seen.add(position)
            with psycopg.connect(pipeline.sink.dsn or "", autocommit=True) as db:
                for suffix in TABLE_SUFFIXES:
                    if suffix != "_pipeline":
                        db.execute(f'DELETE FROM "{name}{suffix}"')
        assert len(seen) > 5  # the writer really ran between the clones
    finally:
        stop.set()
        writer.join(60)
        writer_sink.close()
        live.close()
        shadow.close()
    assert not errors


def test_swap_exchanges_tables_and_groups(pipeline: Pipeline) -> None:
    name = _shadow_name(pipeline.sink.table)
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    shadow = replayable(open_sink(shadow_pipeline(pipeline, name)), pipeline.sink.type)
    try:
        live.write("g", {(0, "old", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 5, 1), None)], [])
        shadow.write("g.s", {(0, "new", "click"): [2, 2, 2, 2]}, [PositionWrite(_pos(0, 9, 2), None)], [])
        shadow.replay_reset("g.s", ReplayReset(SIZE, [Position(T, 1, 3, 4, replay=ReplayFilter(SIZE, 8))]))
        live.replay_swap(name, "g", "g.s")
        assert live.results()[1] == [(0, SIZE, "new", "click", 2, 2, 2, 2)]
        assert live.read_positions("g", [(T, 0), (T, 1)]) == {
            (T, 0): _pos(0, 9, 2),
            (T, 1): Position(T, 1, 3, 4, replay=ReplayFilter(SIZE, 8)),  # the filter moved with its group
        }
        assert live.read_positions("g.s", [(T, 0)]) == {}
        assert {r[0] for r in _checkpoints(pipeline)} == {"g"}
        assert shadow.results()[1] == [(0, SIZE, "old", "click", 1, 1, 1, 1)]
        assert shadow.read_positions("g.s", [(T, 0)]) == {(T, 0): _pos(0, 5, 1)}
        assert live.replay_table_exists(name) and not live.replay_table_exists("nothing")
        # the live sink keeps working on the swapped-in table, compare-and-set included
        live.write("g", {(0, "new", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 10, 3), 9)], [])
        assert live.results()[1] == [(0, SIZE, "new", "click", 3, 3, 1, 2)]
    finally:
        live.close()
        shadow.close()


def test_swap_with_both_groups_in_both_tables(pipeline: Pipeline) -> None:
    """Each table holds rows of both groups for the same partition: exchanging the groups must
    not trip over the primary key halfway."""
    name = _shadow_name(pipeline.sink.table)
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    shadow = replayable(open_sink(shadow_pipeline(pipeline, name)), pipeline.sink.type)
    try:
        for sink, base in ((live, 10), (shadow, 20)):
            sink.write("g", {}, [PositionWrite(_pos(0, base + 1, 1), None)], [])
            sink.write("g.s", {}, [PositionWrite(_pos(0, base + 2, 2), None)], [])
        live.replay_swap(name, "g", "g.s")
        assert live.read_positions("g", [(T, 0)]) == {(T, 0): _pos(0, 22, 2)}
        assert live.read_positions("g.s", [(T, 0)]) == {(T, 0): _pos(0, 21, 1)}
        assert shadow.read_positions("g", [(T, 0)]) == {(T, 0): _pos(0, 12, 2)}
        assert shadow.read_positions("g.s", [(T, 0)]) == {(T, 0): _pos(0, 11, 1)}
        live.replay_swap(name, "g", "g.s")  # and back
        assert live.read_positions("g", [(T, 0)]) == {(T, 0): _pos(0, 11, 1)}
    finally:
        live.close()
        shadow.close()


def test_swap_in_postgres_is_one_transaction_and_keeps_the_primary_keys_named(pg_pipeline: Pipeline) -> None:
    """A swap that fails halfway (here: a shadow companion table missing) changes nothing, and a
    completed swap leaves each table with the primary key named after it."""
    pipeline = pg_pipeline
    name = _shadow_name(pipeline.sink.table)
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    shadow = replayable(open_sink(shadow_pipeline(pipeline, name)), pipeline.sink.type)
    dsn = pipeline.sink.dsn or ""
    try:
        live.write("g", {(0, "old", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 5, 1), None)], [])
        shadow.write("g.s", {(0, "new", "click"): [2, 2, 2, 2]}, [PositionWrite(_pos(0, 9, 2), None)], [])
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f'ALTER TABLE "{name}_replay" RENAME TO "{name}_replay_aside"')
        with pytest.raises(Exception, match="swap of"):
            live.replay_swap(name, "g", "g.s")
        assert live.results()[1] == [(0, SIZE, "old", "click", 1, 1, 1, 1)]
        assert _positions(pipeline) == {("g", T, 0): (5, 1, 0, 0)}
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f'ALTER TABLE "{name}_replay_aside" RENAME TO "{name}_replay"')
        live.replay_swap(name, "g", "g.s")
        assert live.results()[1] == [(0, SIZE, "new", "click", 2, 2, 2, 2)]
        keys = dict(
            _query(
                pipeline,
                "SELECT c.relname, con.conname FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
                f"WHERE con.contype = 'p' AND c.relname LIKE '{pipeline.sink.table}%'",
            )
        )
        assert keys == {t + s: f"{t}{s}_pkey" for t in (pipeline.sink.table, name) for s in TABLE_SUFFIXES}
    finally:
        live.close()
        shadow.close()


def test_tables_from_before_replay_get_the_new_tables(pg_pipeline: Pipeline) -> None:
    """A PostgreSQL sink created before replay existed has four tables: opening it adds the
    checkpoint and filter tables and keeps its rows and positions."""
    pipeline = pg_pipeline
    t = pipeline.sink.table
    first = open_sink(pipeline)
    first.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 7, 3), None)], [])
    first.close()
    with psycopg.connect(pipeline.sink.dsn or "", autocommit=True) as db:
        db.execute(f'DROP TABLE "{t}_checkpoints"')
        db.execute(f'DROP TABLE "{t}_replay"')
    from consumer.sinks.postgres import check

    assert f"{t}_checkpoints, {t}_replay will be created" in check(pipeline)[0]
    again = replayable(open_sink(pipeline), "postgres")
    try:
        assert again.read_positions("g", [(T, 0)]) == {(T, 0): _pos(0, 7, 3)}
        assert again.replay_checkpoints("g", SIZE, {(T, 0): 7}) == {}  # none yet: a replay starts earlier
        _flush(again, _pos(0, 9, 4), 7)
        assert again.replay_checkpoints("g", SIZE, {(T, 0): 9}) == {(T, 0): _pos(0, 9, 4)}
        assert _rows(pipeline) == {(0, "c", "click"): (SIZE, 1, 5, 5, 5)}
    finally:
        again.close()


def test_clone_and_swap_carry_the_sketches(sql_target: Target) -> None:
    """The shadow table of a sketched pipeline gets the sketch columns: a clone copies the bytes,
    and after the swap the live sink merges new partials into the cloned sketches."""
    pipeline = sql_target.pipeline(SKETCHES, name="sketches.toml")
    name = _shadow_name(pipeline.sink.table)
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    shadow = replayable(open_sink(shadow_pipeline(pipeline, name)), pipeline.sink.type)
    try:
        old, new = (0, "c", "click"), (SIZE, "c", "click")
        live.write("g", {old: _sketch_partial(pipeline, [1, 2, 3], [10, 20, 30]),
                         new: _sketch_partial(pipeline, [9], [90])}, [PositionWrite(_pos(0, 4, SIZE + 1), None)],
                   [])  # fmt: skip
        live.replay_clone(name, "g", "g.s", SIZE)  # the windows before SIZE
        assert shadow.results()[1] == [(0, SIZE, "c", "click", 3, 3, 20.0, 30.0, 30.0)]
        sketches = 'SELECT users_sketch, price_sketch FROM "{}" WHERE window_start = 0'
        assert _query(pipeline, sketches.format(name)) == _query(pipeline, sketches.format(pipeline.sink.table))
        shadow.write("g.s", {new: _sketch_partial(pipeline, [9, 8], [90, 80])},
                     [PositionWrite(_pos(0, 6, SIZE + 1), 4)], [])  # fmt: skip
        live.replay_swap(name, "g", "g.s")
        live.write("g", {old: _sketch_partial(pipeline, [3, 4], [40, 50])}, [PositionWrite(_pos(0, 8, SIZE + 2), 6)],
                   [])  # fmt: skip
        assert live.results()[1] == [
            (0, SIZE, "c", "click", 5, 4, 30.0, 50.0, 50.0),
            (SIZE, 2 * SIZE, "c", "click", 2, 2, 80.0, 90.0, 90.0),
        ]
    finally:
        live.close()
        shadow.close()
