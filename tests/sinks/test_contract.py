"""The sink contract (consumer/sinks/base.py), one suite run against every sink: a sink that
passes it is a sink. Aggregates merge by the metrics' rules whatever the order of the writes,
positions read back as written, a write is one transaction, and the SQL sinks compare-and-set
their positions (docs/design.md, "The flush protocol", step 2). What one database does on its
own (its types, locks, connections) is tested beside it: tests/test_sqlite_sink.py,
tests/test_postgres_sink.py, tests/test_kafka_sink.py."""

import json
import math
import random
from typing import Any

import pytest
from datasketches import hll_sketch, kll_doubles_sketch

from consumer import commands
from consumer.aggregate import compile_updater
from consumer.config import Pipeline
from consumer.errors import PositionConflict, SinkError
from consumer.sinks import ReplayableSink, open_sink, sink_type
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


# ---------------------------------------------------------------------------------------------
# sketch metrics: every sink keeps the sketches, merges them, shows their estimates

SKETCHES = {"events": "count", "users": "distinct:user_id", "price": "quantiles:price_micros"}
SKETCH_COLUMNS = ["events", "users", "price_p50", "price_p95", "price_p99"]
SMALL = 300  # distinct values: below 3 * 2^(lg_k - 5) = 384 the HLL estimate is exact in any merge order


def _sketched(t: Target) -> Pipeline:
    return t.pipeline(SKETCHES, name="sketches.toml")


def _sketch_partial(pipeline: Pipeline, users: list[int], prices: list[int]) -> list[Any]:
    """A partial as the worker's fold builds it: the events folded one by one."""
    state: dict[Any, list[Any]] = {}
    update = compile_updater(["campaign_id", "event_type"], pipeline.aggregate.metrics)
    for user, price in zip(users, prices, strict=True):
        update(state, 0, {"campaign_id": "c", "event_type": "click", "user_id": user, "price_micros": price})
    return state[(0, "c", "click")]


def _exact_quantile(values: list[int], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def _results(t: Target, pipeline: Pipeline) -> tuple[list[str], list[tuple[Any, ...]]]:
    """What ``eventfleet results`` reads, through a sink opened apart."""
    sink = open_sink(pipeline)
    try:
        return sink.results()
    finally:
        sink.close()


def test_sketches_merge_across_writes_and_show_estimates(any_target: Target) -> None:
    t = any_target
    pipeline = _sketched(t)
    sink = t.open(pipeline)
    rng = random.Random(17)
    seen: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
    keys = [(ws, c, "click") for ws in (0, SIZE) for c in ("c1", "c2")]
    stored: dict[int, int | None] = {0: None, 1: None}
    for step in range(12):
        partition = step % 2  # writes from two partitions, overlapping users
        partials = {}
        for key in rng.sample(keys, rng.randint(1, len(keys))):
            n = rng.randint(1, 60)
            users = [rng.randrange(SMALL // 2) for _ in range(n)]
            prices = [rng.randint(1, 10**6) for _ in range(n)]
            seen.setdefault(key, ([], []))
            seen[key][0].extend(users)
            seen[key][1].extend(prices)
            partials[key] = _sketch_partial(pipeline, users, prices)
        offset = 10 * (step + 1)
        sink.write(t.group, t.partials(partials, partition), [PositionWrite(t.pos(partition, offset),
                   stored[partition])], [])  # fmt: skip
        stored[partition] = offset
    columns, rows = _results(t, t.pipeline(SKETCHES, name="reader.toml"))
    assert columns == ["window_start", "window_end", "campaign_id", "event_type", *SKETCH_COLUMNS]
    expected = {
        k: (k[0] + SIZE, len(p), len(set(u)), *(_exact_quantile(p, q) for q in (0.5, 0.95, 0.99)))
        for k, (u, p) in seen.items()
    }  # fewer than KLL's k = 200 values... or not: checked apart below
    got = {(r[0], r[2], r[3]): r[1:2] + r[4:] for r in rows}
    assert set(got) == set(expected)
    for key, row in got.items():
        want = expected[key]
        assert row[:3] == want[:3]  # window end, events, exact distinct users (below 384)
        assert all(isinstance(v, float) for v in row[3:])
        prices = sorted(seen[key][1])
        for q, v in zip((0.5, 0.95, 0.99), row[3:], strict=True):  # within KLL's rank error (1.65% at k=200)
            rank = sum(1 for p in prices if p <= v) / len(prices)
            assert abs(rank - q) <= 0.0165 + 1 / len(prices), (key, q, v)


def test_sql_sinks_store_sketch_bytes_and_queryable_estimates(sql_target: Target) -> None:
    t = sql_target
    pipeline = _sketched(t)
    sink = t.open(pipeline)
    users, prices = list(range(100)), list(range(1, 101))
    sink.write("g", {(0, "c", "click"): _sketch_partial(pipeline, users, prices)},
               [PositionWrite(t.pos(0, 100), None)], [])  # fmt: skip
    sink.write("g", {(0, "c", "click"): _sketch_partial(pipeline, [u + 50 for u in users], prices)},
               [PositionWrite(t.pos(0, 200), 100)], [])  # fmt: skip
    ((events, distinct, p50, p99, hll, kll),) = t.query(
        f'SELECT events, users, price_p50, price_p99, users_sketch, price_sketch FROM "{t.table}"'
    )
    assert (events, distinct, p50, p99) == (200, 150, 50.0, 99.0)
    assert round(hll_sketch.deserialize(bytes(hll)).get_estimate()) == 150  # DataSketches' own format
    assert kll_doubles_sketch.deserialize(bytes(kll)).n == 200


def test_a_doubled_sketch_flush_is_refused_by_the_positions(sql_target: Target) -> None:
    """The HLL union is idempotent: a flush merged twice would leave the distinct estimate as it
    was. The compare-and-set must refuse the second one (the count shows it was not merged)."""
    t = sql_target
    pipeline = _sketched(t)
    sink = t.open(pipeline)
    key = (0, "c", "click")
    partial = _sketch_partial(pipeline, [1, 2, 3], [10, 20, 30])
    first = [PositionWrite(t.pos(0, 3), None)]
    sink.write("g", {key: partial}, first, [])
    before = t.query(f'SELECT * FROM "{t.table}"')
    with pytest.raises(PositionConflict):
        sink.write("g", {key: partial}, first, [])
    later = [PositionWrite(t.pos(0, 6, 100), 3)]
    sink.write("g", {key: partial}, later, [])  # a stale expected offset is refused the same way
    with pytest.raises(PositionConflict):
        sink.write("g", {key: partial}, later, [])
    assert t.query(f'SELECT * FROM "{t.table}"') != before
    rows = _results(t, pipeline)[1]
    assert rows == [(0, SIZE, "c", "click", 6, 3, 20.0, 30.0, 30.0)]
    assert partial[1].get_estimate() == pytest.approx(3)  # the worker's partial is left as it was


def test_two_sinks_merge_sketches_of_the_same_keys(sql_target: Target) -> None:
    t = sql_target
    pipeline = _sketched(t)
    a, b = t.open(pipeline), t.open(pipeline)
    rng = random.Random(3)
    seen: dict[tuple[Any, ...], set[int]] = {}
    stored: dict[Any, int | None] = {a: None, b: None}
    partition, offset = {a: 0, b: 1}, {a: 0, b: 0}
    for step in range(20):
        s = a if step % 2 == 0 else b
        key = (rng.choice([0, SIZE]), rng.choice(["c1", "c2"]), "click")
        users = [rng.randrange(SMALL) for _ in range(rng.randint(1, 30))]
        seen.setdefault(key, set()).update(users)
        offset[s] += len(users)
        s.write("g", {key: _sketch_partial(pipeline, users, users)},
                [PositionWrite(t.pos(partition[s], offset[s]), stored[s])], [])  # fmt: skip
        stored[s] = offset[s]
    rows = _results(t, pipeline)[1]
    assert {(r[0], r[2], r[3]): r[5] for r in rows} == {k: len(v) for k, v in seen.items()}


def test_reopen_with_another_sketch_size_is_refused(sql_target: Target) -> None:
    t = sql_target
    first = {"events": "count", "price": "quantiles:price_micros", "users": "distinct:user_id"}
    t.open(t.pipeline(first))
    other = {**first, "users": {"kind": "distinct", "field": "user_id", "lg_k": 14}}  # a table: written last
    with pytest.raises(SinkError, match="was written by a pipeline that computes"):
        t.open(t.pipeline(other, name="changed.toml"))  # type: ignore[arg-type]


def test_the_results_command_shows_estimates_never_bytes(
    sql_target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    t = sql_target
    pipeline = _sketched(t)
    sink = t.open(pipeline)
    sink.write("g", {(0, "c", "click"): _sketch_partial(pipeline, [7, 8, 7, 9], [40, 10, 30, 20])},
               [PositionWrite(t.pos(0, 4), None)], [])  # fmt: skip
    config = str(t.folder / "sketches.toml")
    assert commands.main(["results", "--config", config, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"window_start": 0, "window_end": SIZE, "campaign_id": "c", "event_type": "click", "events": 4, "users": 3,
         "price_p50": 20.0, "price_p95": 40.0, "price_p99": 40.0}
    ]  # fmt: skip
    assert commands.main(["results", "--config", config]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["window_start", "window_end", "campaign_id", "event_type", *SKETCH_COLUMNS]
    assert row.split()[2:] == ["c", "click", "4", "3", "20", "40", "40"]
