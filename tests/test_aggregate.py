"""Unit tests of consumer.aggregate: metric specs, merge rules and the generated updater."""

import itertools
import random
from collections import defaultdict
from typing import Any

import pytest

from consumer.aggregate import Metric, compile_updater, merge, updater_source

# ---------------------------------------------------------------------------------------------
# Metric.parse


@pytest.mark.parametrize(
    ("spec", "kind", "field"),
    [
        ("count", "count", None),
        (" count ", "count", None),
        ("sum:price_micros", "sum", "price_micros"),
        ("min:price_micros", "min", "price_micros"),
        ("max:user_id", "max", "user_id"),
        (" sum : price ", "sum", "price"),
    ],
)
def test_metric_parse_valid(spec: str, kind: str, field: str | None) -> None:
    assert Metric.parse("m", spec) == Metric("m", kind, field)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown metric"),
        ("   ", "unknown metric"),
        ("avg:price", "unknown metric"),
        ("avg", "unknown metric"),
        ("COUNT", "unknown metric"),
        ("Sum:price", "unknown metric"),
        (":price", "unknown metric"),
        ("sums:price", "unknown metric"),
        ("count:price", "takes no field"),
        ("count: x", "takes no field"),
        ("sum", "needs a field"),
        ("sum:", "needs a field"),
        ("min: ", "needs a field"),
        ("max", "needs a field"),
    ],
)
def test_metric_parse_invalid(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Metric.parse("m", spec)


@pytest.mark.parametrize("spec", [None, 3, 1.5, ["sum", "price"], b"count"])
def test_metric_parse_non_string(spec: Any) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        Metric.parse("m", spec)


def test_metric_parse_table_without_kind() -> None:
    """A table is the long form (tests/test_sketches.py): it needs its kind."""
    with pytest.raises(ValueError, match="kind must be one of"):
        Metric.parse("m", {"sum": "price"})


# ---------------------------------------------------------------------------------------------
# merge

METRICS = (
    Metric("n", "count"),
    Metric("total", "sum", "a"),
    Metric("lo", "min", "a"),
    Metric("hi", "max", "a"),
    Metric("fsum", "sum", "b"),
    Metric("flo", "min", "b"),
    Metric("fhi", "max", "b"),
)


def _raw_batch(rng: random.Random) -> list[tuple[int, float]]:
    # b: multiples of 1/4 with small magnitude, so float sums are exact in any order
    return [(rng.randint(-(10**9), 10**9), rng.randint(-4000, 4000) / 4) for _ in range(rng.randint(1, 6))]


def _truth(rows: list[tuple[int, float]]) -> list[Any]:
    """The partial of these raw (a, b) values, computed directly from its definition."""
    a = [r[0] for r in rows]
    b = [r[1] for r in rows]
    return [len(rows), sum(a), min(a), max(a), sum(b), min(b), max(b)]


def test_merge_two_partials() -> None:
    x, y = [2, 10, 3, 7, 1.5, 0.5, 1.0], [1, -4, -4, -4, 2.0, 2.0, 2.0]
    assert merge(METRICS, x, y) == [3, 6, -4, 7, 3.5, 0.5, 2.0]


def test_merge_does_not_mutate_inputs() -> None:
    x, y = [2, 10, 3, 7, 1.5, 0.5, 1.0], [1, -4, -4, -4, 2.0, 2.0, 2.0]
    x0, y0 = list(x), list(y)
    merge(METRICS, x, y)
    assert (x, y) == (x0, y0)


def test_merge_length_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        merge(METRICS, [1, 2, 3], [1, 2, 3])


def test_merge_commutative_and_associative_pairs() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a, b, c = (_truth(_raw_batch(rng)) for _ in range(3))
        assert merge(METRICS, a, b) == merge(METRICS, b, a)
        assert merge(METRICS, merge(METRICS, a, b), c) == merge(METRICS, a, merge(METRICS, b, c))


def _random_tree_merge(rng: random.Random, parts: list[list[Any]]) -> list[Any]:
    """Merge partials by repeatedly combining two random elements, in a random argument order."""
    pool = list(parts)
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        x, y = pool[i], pool[j]
        pool = [p for k, p in enumerate(pool) if k not in (i, j)]
        pool.append(merge(METRICS, x, y) if rng.random() < 0.5 else merge(METRICS, y, x))
    return pool[0]


def test_merge_any_order_and_grouping_equals_ground_truth() -> None:
    rng = random.Random(2024)
    for _ in range(200):
        batches = [_raw_batch(rng) for _ in range(rng.randint(1, 12))]
        expected = _truth(list(itertools.chain.from_iterable(batches)))
        parts = [_truth(batch) for batch in batches]
        assert _random_tree_merge(rng, parts) == expected
        shuffled = list(parts)
        rng.shuffle(shuffled)
        acc = shuffled[0]
        for p in shuffled[1:]:
            acc = merge(METRICS, acc, p)
        assert acc == expected


# ---------------------------------------------------------------------------------------------
# compile_updater

CAMPAIGNS = ["c1", "c2", "c3"]
TYPES = ["impression", "click", "conversion"]
SIZE = 60_000


def _records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e{i}",
            "ts": rng.randint(-300_000, 600_000),
            "campaign_id": rng.choice(CAMPAIGNS),
            "event_type": rng.choice(TYPES),
            "user_id": rng.randint(0, 1000),
            "price_micros": rng.randint(-(10**6), 10**9),
            "score": rng.randint(-400, 400) / 8,
        }
        for i in range(n)
    ]


def _floor_window(t: int) -> int:
    return (t // SIZE) * SIZE


def _ground_truth(records: list[dict[str, Any]], group_by: list[str]) -> dict[tuple[Any, ...], dict[str, list[Any]]]:
    """Values seen per (window_start, *group values), to compute each metric from."""
    seen: dict[tuple[Any, ...], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        key = (_floor_window(r["ts"]), *(r[g] for g in group_by))
        for f in ("price_micros", "user_id", "score"):
            seen[key][f].append(r[f])
        seen[key]["_n"].append(1)
    return seen


def _expected(records: list[dict[str, Any]], group_by: list[str], metrics: list[Metric]) -> dict[Any, list[Any]]:
    ops = {"sum": sum, "min": min, "max": max}
    out = {}
    for key, values in _ground_truth(records, group_by).items():
        out[key] = [len(values["_n"]) if m.kind == "count" else ops[m.kind](values[m.field or ""]) for m in metrics]
    return out


AD_METRICS = [
    Metric("events", "count"),
    Metric("spend", "sum", "price_micros"),
    Metric("min_price", "min", "price_micros"),
    Metric("max_price", "max", "price_micros"),
    Metric("users", "sum", "user_id"),
    Metric("top_score", "max", "score"),
    Metric("low_score", "min", "score"),
]


@pytest.mark.parametrize(
    "group_by",
    [["campaign_id", "event_type"], ["campaign_id"], [], ["event_type", "campaign_id"], ["user_id"]],
)
def test_updater_matches_ground_truth(group_by: list[str]) -> None:
    rng = random.Random("updater:" + ",".join(group_by))
    records = _records(rng, 3_000)
    update = compile_updater(group_by, AD_METRICS)
    state: dict[Any, list[Any]] = {}
    for r in records:
        update(state, _floor_window(r["ts"]), r)
    assert state == _expected(records, group_by, AD_METRICS)


@pytest.mark.parametrize("group_by", [["campaign_id", "event_type"], [], ["user_id"]])
def test_updater_on_tuples_matches_ground_truth(group_by: list[str]) -> None:
    """The worker's form: records are tuples of ``fields`` (the projection's order, which
    differs from the schema's and may hold fields the updater does not use)."""
    rng = random.Random("tuples:" + ",".join(group_by))
    records = _records(rng, 3_000)
    fields = ["ts", "score", *reversed(group_by), "price_micros", "user_id"]
    fields = list(dict.fromkeys(fields))
    update = compile_updater(group_by, AD_METRICS, fields)
    state: dict[Any, list[Any]] = {}
    for r in records:
        update(state, _floor_window(r["ts"]), tuple(r[f] for f in fields))
    assert state == _expected(records, group_by, AD_METRICS)
    assert "r[0]" not in updater_source(group_by, AD_METRICS, fields)  # ts: not read by the updater


def test_updater_metric_order_is_respected() -> None:
    metrics = [Metric("hi", "max", "price_micros"), Metric("n", "count"), Metric("lo", "min", "price_micros")]
    update = compile_updater(["campaign_id"], metrics)
    state: dict[Any, list[Any]] = {}
    for price in (5, -3, 9, 2):
        update(state, 0, {"campaign_id": "c", "price_micros": price})
    assert state == {(0, "c"): [9, 4, -3]}


def test_updater_group_by_field_also_aggregated() -> None:
    metrics = [Metric("n", "count"), Metric("s", "sum", "user_id"), Metric("m", "max", "user_id")]
    update = compile_updater(["user_id"], metrics)
    state: dict[Any, list[Any]] = {}
    for uid in (4, 4, 7):
        update(state, 60_000, {"user_id": uid})
    assert state == {(60_000, 4): [2, 8, 4], (60_000, 7): [1, 7, 7]}


def test_updater_split_then_merge_equals_single_pass() -> None:
    """Folding in two workers and merging their partials gives the single-pass result."""
    rng = random.Random(31)
    records = _records(rng, 2_000)
    group_by = ["campaign_id", "event_type"]
    update = compile_updater(group_by, AD_METRICS)
    left: dict[Any, list[Any]] = {}
    right: dict[Any, list[Any]] = {}
    for r in records:
        update(left if rng.random() < 0.5 else right, _floor_window(r["ts"]), r)
    combined = dict(left)
    for key, partial in right.items():
        combined[key] = merge(AD_METRICS, combined[key], partial) if key in combined else partial
    assert combined == _expected(records, group_by, AD_METRICS)


def test_updater_does_not_alias_between_keys() -> None:
    update = compile_updater(["campaign_id"], [Metric("s", "sum", "price_micros")])
    state: dict[Any, list[Any]] = {}
    update(state, 0, {"campaign_id": "a", "price_micros": 1})
    update(state, 0, {"campaign_id": "b", "price_micros": 10})
    update(state, 0, {"campaign_id": "a", "price_micros": 2})
    assert state == {(0, "a"): [3], (0, "b"): [10]}


def test_updater_source_is_loop_free() -> None:
    source = updater_source(["campaign_id"], AD_METRICS)
    assert source.startswith("def update(state, ws, r):")
    assert "for " not in source
