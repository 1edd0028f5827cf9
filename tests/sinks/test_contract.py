"""The sink contract (consumer/sinks/base.py), one suite run against every sink: a sink that
passes it is a sink. Aggregates merge by the metrics' rules whatever the order of the writes,
positions read back as written, a write is one transaction, and the SQL sinks compare-and-set
their positions (docs/design.md, "The flush protocol", step 2). What one database does on its
own (its types, locks, connections) is tested beside it: tests/test_sqlite_sink.py,
tests/test_postgres_sink.py, tests/test_kafka_sink.py."""

import random
from typing import Any

import pytest

from consumer.errors import PositionConflict, SinkError
from consumer.sinks import ReplayableSink, sink_type
from consumer.types import Position, PositionWrite, Reject
from consumer.window import NO_WATERMARK

from .conftest import METRICS, SIZE, Target


def _partial(prices: list[int]) -> list[int]:
    return [len(prices), sum(prices), min(prices), max(prices)]


# ---------------------------------------------------------------------------------------------
# abilities: declared, and what the engine relies on


@pytest.mark.parametrize(
    ("kind", "replay", "positions_in_kafka", "partials_by_partition"),
    [("sqlite", True, False, False), ("postgres", True, False, False), ("kafka", False, True, True)],
)
def test_each_sink_declares_its_abilities(
    kind: str, replay: bool, positions_in_kafka: bool, partials_by_partition: bool
) -> None:
    registered = sink_type(kind)
    opened = registered.open
    assert isinstance(opened, type)
    assert (opened.replay, opened.positions_in_kafka, opened.partials_by_partition) == (
        replay,
        positions_in_kafka,
        partials_by_partition,
    )
    assert issubclass(opened, ReplayableSink) == replay
    assert "type" in registered.keys


# ---------------------------------------------------------------------------------------------
# aggregates: every sink


def test_write_merges_partials_across_calls(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    rng = random.Random(11)
    seen: dict[tuple[Any, ...], list[int]] = {}
    keys = [(ws, c, e) for ws in (-SIZE, 0, SIZE, 5 * SIZE) for c in ("c1", "c2") for e in ("click", "impression")]
    expected_offset = None
    for offset in range(1, 16):
        partials = {}
        for key in rng.sample(keys, rng.randint(1, len(keys))):
            prices = [rng.randint(-1000, 10**9) for _ in range(rng.randint(1, 5))]
            seen.setdefault(key, []).extend(prices)
            partials[key] = _partial(prices)
        sink.write(t.group, t.partials(partials), [PositionWrite(t.pos(0, offset), expected_offset)], [])
        expected_offset = offset
    assert t.rows() == {k: (k[0] + SIZE, len(v), sum(v), min(v), max(v)) for k, v in seen.items()}


def test_min_max_compare_not_overwrite(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    key = (0, "c", "click")
    for offset, price in enumerate((50, 70, 20, 60), start=1):
        sink.write(t.group, t.partials({key: [1, price, price, price]}), [PositionWrite(t.pos(0, offset), None
                   if offset == 1 else offset - 1)], [])  # fmt: skip
    assert t.rows() == {key: (SIZE, 4, 200, 20, 70)}


def test_results_ordered_by_window_then_groups(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    sink.write(t.group, t.partials({(SIZE, "a", "click"): [1, 1, 1, 1], (0, "b", "click"): [1, 2, 2, 2]}),
               [PositionWrite(t.pos(0, 1), None)], [])  # fmt: skip
    sink.write(t.group, t.partials({(0, "a", "impression"): [1, 3, 3, 3], (0, "a", "click"): [1, 4, 4, 4]}, 1),
               [PositionWrite(t.pos(1, 1), None)], [])  # fmt: skip
    columns, rows = sink.results()
    assert columns == ["window_start", "window_end", "campaign_id", "event_type", *METRICS]
    assert [(r[0], r[2], r[3]) for r in rows] == [(0, "a", "click"), (0, "a", "impression"), (0, "b", "click"),
                                                  (SIZE, "a", "click")]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# positions: every sink


def test_first_write_stores_the_position(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    sink.write(t.group, t.partials({(0, "c", "click"): [1, 5, 5, 5]}), [PositionWrite(t.pos(0, 10, 1234, 2, 1), None)],
               [])  # fmt: skip
    assert t.positions([0, 1]) == {0: t.pos(0, 10, 1234, 2, 1)}
    assert sink.read_positions(t.group, [(t.topic, 0)]) == {(t.topic, 0): t.pos(0, 10, 1234, 2, 1)}


def test_read_positions_returns_what_was_written(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    writes = [PositionWrite(t.pos(p, 100 + p, NO_WATERMARK if p == 2 else 1000 * p, p, 2 * p), None) for p in range(3)]
    sink.write(t.group, {}, writes, [])
    got = sink.read_positions(t.group, [(t.topic, 0), (t.topic, 2), (t.topic, 3)])
    assert got == {(t.topic, 0): writes[0].new, (t.topic, 2): writes[2].new}
    assert sink.read_positions(t.group, []) == {}
    assert t.positions([0, 1, 2, 3]) == {p: writes[p].new for p in range(3)}


def test_reopen_same_pipeline_keeps_data(any_target: Target) -> None:
    t = any_target
    sink = t.open()
    sink.write(t.group, t.partials({(0, "c", "click"): [1, 5, 5, 5]}), [PositionWrite(t.pos(0, 1), None)], [])
    sink.close()
    again = t.open(t.pipeline(name="again.toml"))
    again.write(t.group, t.partials({(0, "c", "click"): [1, 6, 6, 6]}), [PositionWrite(t.pos(0, 2), 1)], [])
    assert again.results()[1] == [(0, SIZE, "c", "click", 2, 11, 5, 6)]
    assert t.positions([0]) == {0: t.pos(0, 2)}


# ---------------------------------------------------------------------------------------------
# compare-and-set: the sinks that keep positions in their own tables


def _state(t: Target) -> tuple[Any, ...]:
    return (
        t.rows(),
        t.query(f'SELECT consumer_group, topic, partition, next_offset, watermark, late_events, invalid_events '
                f'FROM "{t.table}_positions" ORDER BY 1, 2, 3'),
        t.query(f'SELECT * FROM "{t.table}_rejects" ORDER BY topic, partition, kafka_offset'),
        t.query(f'SELECT * FROM "{t.table}_checkpoints" ORDER BY 1, 2, 3, 4'),
    )  # fmt: skip


def test_a_second_first_write_conflicts_and_changes_nothing(sql_target: Target) -> None:
    t = sql_target
    key = (0, "c", "click")
    t.open().write("g", {key: [1, 5, 5, 5]}, [PositionWrite(t.pos(0, 10, 100), None)], [])
    before = _state(t)
    other = t.open()
    with pytest.raises(PositionConflict) as info:
        reject = Reject(t.topic, 0, 3, 1, None, b"x", "bad")
        other.write("g", {key: [3, 300, 1, 200], (SIZE, "z", "click"): [1, 1, 1, 1]},
                    [PositionWrite(t.pos(0, 20, 500), None)], [reject])  # fmt: skip
    assert info.value.partitions == [(t.topic, 0)]
    assert _state(t) == before


def test_the_same_write_twice_merges_once(sql_target: Target) -> None:
    """A flush retried after it committed (the commit's answer was lost) must not merge again."""
    t = sql_target
    sink = t.open()
    key = (0, "c", "click")
    first = [PositionWrite(t.pos(0, 10, 100), None)]
    sink.write("g", {key: [2, 10, 4, 6]}, first, [])
    with pytest.raises(PositionConflict):
        sink.write("g", {key: [2, 10, 4, 6]}, first, [])
    later = [PositionWrite(t.pos(0, 20, 200), 10)]
    sink.write("g", {key: [1, 1, 1, 1]}, later, [])
    with pytest.raises(PositionConflict):
        sink.write("g", {key: [1, 1, 1, 1]}, later, [])
    assert t.rows() == {key: (SIZE, 3, 11, 1, 6)}
    assert t.positions([0]) == {0: t.pos(0, 20, 200)}


def test_conflict_on_one_partition_rolls_back_the_others(sql_target: Target) -> None:
    t = sql_target
    sink = t.open()
    sink.write("g", {}, [PositionWrite(t.pos(1, 10), None)], [])
    before = _state(t)
    with pytest.raises(PositionConflict) as info:
        sink.write(
            "g",
            {(0, "c", "click"): [1, 5, 5, 5]},
            [
                PositionWrite(t.pos(0, 7), None),  # would insert
                PositionWrite(t.pos(1, 30), 25),  # stale: the row holds 10
                PositionWrite(t.pos(2, 4), None),  # would insert
            ],
            [Reject(t.topic, 0, 1, 1, b"k", b"v", "e")],
        )
    assert info.value.partitions == [(t.topic, 1)]
    assert _state(t) == before


def test_a_stale_update_conflicts_and_the_sink_stays_usable(sql_target: Target) -> None:
    t = sql_target
    sink = t.open()
    key = (0, "c", "click")
    sink.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(t.pos(0, 10, 100), None)], [])
    sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(t.pos(0, 20, 200), 10)], [])
    with pytest.raises(PositionConflict):
        sink.write("g", {key: [1, 1000, 1000, 1000]}, [PositionWrite(t.pos(0, 30, 300), 10)], [])
    assert t.rows() == {key: (SIZE, 2, 12, 5, 7)}
    assert t.positions([0]) == {0: t.pos(0, 20, 200)}
    sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(t.pos(0, 30, 300, 1), 20)], [])
    assert t.rows() == {key: (SIZE, 3, 13, 1, 7)}
    assert t.positions([0]) == {0: t.pos(0, 30, 300, 1)}


def test_update_of_a_missing_row_conflicts(sql_target: Target) -> None:
    t = sql_target
    with pytest.raises(PositionConflict):
        t.open().write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(t.pos(0, 10), 0)], [])
    assert t.rows() == {}
    assert t.positions([0]) == {}


def test_groups_are_separate(sql_target: Target) -> None:
    t = sql_target
    sink = t.open()
    sink.write("g1", {}, [PositionWrite(t.pos(0, 10), None)], [])
    sink.write("g2", {}, [PositionWrite(t.pos(0, 99), None)], [])
    sink.write("g1", {}, [PositionWrite(Position("other-topic", 0, 5, 6, 7, 8), None)], [])
    assert sink.read_positions("g1", [(t.topic, 0), ("other-topic", 0)]) == {
        (t.topic, 0): t.pos(0, 10),
        ("other-topic", 0): Position("other-topic", 0, 5, 6, 7, 8),
    }
    assert sink.read_positions("g2", [(t.topic, 0)]) == {(t.topic, 0): t.pos(0, 99)}
    assert sink.read_positions("nobody", [(t.topic, 0)]) == {}


def test_a_zombie_worker_is_fenced(sql_target: Target) -> None:
    """Worker A owned partition 0, stalled; B took over from the sink's position and flushed.
    A's late flush must fail and change nothing."""
    t = sql_target
    a, b = t.open(), t.open()
    key = (0, "c", "click")
    a.write("g", {key: [2, 30, 10, 20]}, [PositionWrite(t.pos(0, 2, 100), None)], [])
    taken = b.read_positions("g", [(t.topic, 0)])[(t.topic, 0)]
    b.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(t.pos(0, 3, 110), taken.next_offset)], [])
    with pytest.raises(PositionConflict):
        a.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(t.pos(0, 3, 110), 2)], [])
    assert t.rows() == {key: (SIZE, 3, 35, 5, 20)}
    assert t.positions([0]) == {0: t.pos(0, 3, 110)}


def test_two_sinks_interleave_and_see_each_others_writes(sql_target: Target) -> None:
    t = sql_target
    a, b = t.open(), t.open()
    rng = random.Random(5)
    seen: dict[tuple[Any, ...], list[int]] = {}
    stored: dict[Any, int | None] = {a: None, b: None}
    partition, offset = {a: 0, b: 1}, {a: 0, b: 0}
    for step in range(40):
        s = a if step % 2 == 0 else b
        key = (rng.choice([0, SIZE]), rng.choice(["c1", "c2"]), "click")
        prices = [rng.randint(1, 100) for _ in range(rng.randint(1, 3))]
        seen.setdefault(key, []).extend(prices)
        offset[s] += len(prices)
        s.write("g", {key: _partial(prices)}, [PositionWrite(t.pos(partition[s], offset[s]), stored[s])], [])
        stored[s] = offset[s]
    assert t.rows() == {k: (k[0] + SIZE, len(v), sum(v), min(v), max(v)) for k, v in seen.items()}
    assert a.read_positions("g", [(t.topic, 1)]) == {(t.topic, 1): t.pos(1, offset[b])}
    assert b.results()[1] == a.results()[1]


# ---------------------------------------------------------------------------------------------
# rejects and tables: the SQL sinks


def test_rejects_are_stored_once(sql_target: Target) -> None:
    t = sql_target
    sink = t.open()
    rejects = [
        Reject(t.topic, 0, 5, 1_700_000_000_000, b"key", b"\x00\xff garbage", "EOFError: truncated"),
        Reject(t.topic, 3, 0, -1, None, None, "no value"),
    ]
    sink.write("g", {}, [PositionWrite(t.pos(0, 6), None)], rejects)
    sink.write("g", {}, [PositionWrite(t.pos(0, 7), 6)], rejects[:1])  # a retried reject is kept once
    assert t.query(f'SELECT * FROM "{t.table}_rejects" ORDER BY topic, partition, kafka_offset') == [
        (t.topic, 0, 5, 1_700_000_000_000, b"key", b"\x00\xff garbage", "EOFError: truncated"),
        (t.topic, 3, 0, -1, None, None, "no value"),
    ]


@pytest.mark.parametrize(
    "metrics",
    [
        {"events": "count", "spend": "sum:price_micros"},
        {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "top": "max:price_micros"},
        {**METRICS, "users": "sum:user_id"},
    ],
    ids=["fewer", "renamed", "more"],
)
def test_reopen_with_other_columns_is_refused(sql_target: Target, metrics: dict[str, str]) -> None:
    t = sql_target
    t.open()
    with pytest.raises(SinkError, match=f"table '{t.table}' has columns") as info:
        t.open(t.pipeline(metrics, name="changed.toml"))
    assert "drop the old tables" in str(info.value)


@pytest.mark.parametrize(
    ("metrics", "size"),
    [({**METRICS, "spend": "max:price_micros"}, "1m"), ({**METRICS, "spend": "sum:user_id"}, "1m"), (METRICS, "30s")],
    ids=["metric-kind", "metric-field", "window-size"],
)
def test_reopen_computing_something_else_is_refused(sql_target: Target, metrics: dict[str, str], size: str) -> None:
    t = sql_target
    t.open()
    with pytest.raises(SinkError, match=f"table '{t.table}'.* was written by a pipeline that computes"):
        t.open(t.pipeline(metrics, size, name="changed.toml"))


def test_creates_the_six_tables(sql_target: Target) -> None:
    t = sql_target
    sink = t.open()
    assert isinstance(sink, ReplayableSink)
    for name in sink.replay_tables():
        assert sink.replay_table_exists(name)
        assert t.query(f'SELECT count(*) FROM "{name}"') == [(1 if name.endswith("_pipeline") else 0,)]
    assert not sink.replay_table_exists(f"{t.table}_sh")
