"""Sketch metrics (consumer.aggregate): ``distinct`` (HLL) and ``quantiles`` (KLL) from Apache
DataSketches: their config forms and errors, the generated fold, merge, bytes, estimate columns,
and their accuracy against exact answers computed in plain Python (docs/metrics.md).

Error bounds are the library's documented ones: HLL's relative standard error 1.04 / sqrt(2^lg_k)
(an upper bound for every mode: the in-sketch HIP estimator does better), KLL's normalized rank
error 2.446 / k^0.9433 (1.65% at k = 200, at 99% confidence, for any rank).
"""

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from datasketches import hll_sketch

from consumer import config
from consumer.aggregate import (
    DEFAULT_LG_K,
    DEFAULT_QUANTILES,
    Metric,
    MetricError,
    compile_fold,
    compile_updater,
    estimate_columns,
    estimates,
    hll_type,
    merge,
    new_sketch,
    quantile_suffix,
    sketch_column,
    sketch_from_bytes,
    sketch_to_bytes,
    updater_source,
)
from consumer.config import load
from consumer.errors import ConfigError
from consumer.window import NO_WATERMARK

ROOT = Path(__file__).parents[1]
SCHEMA = {
    "type": "record",
    "name": "Request",
    "fields": [
        {"name": "ts", "type": "long"},
        {"name": "endpoint", "type": "string"},
        {"name": "user_id", "type": "long"},
        {"name": "session", "type": "string"},
        {"name": "latency_ms", "type": "double"},
        {"name": "bytes_out", "type": "int"},
        {"name": "body", "type": "bytes"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "region", "type": ["null", "string"], "default": None},
    ],
}
TYPES = config.field_types(SCHEMA)


def rse(lg_k: int) -> float:
    """HLL's relative standard error (the classic bound; DataSketches' estimators meet it)."""
    return 1.04 / math.sqrt(2**lg_k)


def kll_rank_error(k: int) -> float:
    """KLL's documented normalized rank error at 99% confidence (the "PMF" form, the wider one)."""
    return 2.446 / k**0.9433


def exact_rank_range(sorted_values: list[float], value: float) -> tuple[float, float]:
    """The ranks ``value`` may stand for: the fraction of values below it, and at or below it."""
    import bisect

    n = len(sorted_values)
    return bisect.bisect_left(sorted_values, value) / n, bisect.bisect_right(sorted_values, value) / n


# ---------------------------------------------------------------------------------------------
# the forms of a metric


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("distinct:user_id", Metric("m", "distinct", "user_id")),
        (" quantiles : latency_ms ", Metric("m", "quantiles", "latency_ms")),
        ({"kind": "distinct", "field": "user_id"}, Metric("m", "distinct", "user_id")),
        ({"kind": "distinct", "field": "user_id", "lg_k": 14}, Metric("m", "distinct", "user_id", lg_k=14)),
        (
            {"kind": "quantiles", "field": "latency_ms", "quantiles": [0.5, 0.999]},
            Metric("m", "quantiles", "latency_ms", quantiles=(0.5, 0.999)),
        ),
        (
            {"kind": "quantiles", "field": "latency_ms", "k": 400, "quantiles": [0.9]},
            Metric("m", "quantiles", "latency_ms", quantiles=(0.9,), k=400),
        ),
        ({"kind": "count"}, Metric("m", "count")),
        ({"kind": "sum", "field": "bytes_out"}, Metric("m", "sum", "bytes_out")),
    ],
)
def test_metric_forms(spec: Any, expected: Metric) -> None:
    assert Metric.parse("m", spec) == expected


def test_metric_defaults() -> None:
    m = Metric.parse("m", "quantiles:latency_ms")
    assert (m.quantiles, m.k) == (DEFAULT_QUANTILES, 200) == ((0.5, 0.95, 0.99), 200)
    assert Metric.parse("m", "distinct:user_id").lg_k == DEFAULT_LG_K == 12


@pytest.mark.parametrize(
    ("spec", "option", "message"),
    [
        ({"kind": "distinct", "field": "user_id", "lg_k": 3}, "lg_k", "from 4 to 21"),
        ({"kind": "distinct", "field": "user_id", "lg_k": 22}, "lg_k", "from 4 to 21"),
        ({"kind": "distinct", "field": "user_id", "lg_k": "12"}, "lg_k", "whole number"),
        ({"kind": "distinct", "field": "user_id", "lg_k": True}, "lg_k", "whole number"),
        ({"kind": "distinct", "field": "user_id", "lg_k": 12.0}, "lg_k", "whole number"),
        ({"kind": "quantiles", "field": "x", "quantiles": [1.5]}, "quantiles", "is not a quantile"),
        ({"kind": "quantiles", "field": "x", "quantiles": [0]}, "quantiles", "is not a quantile"),
        ({"kind": "quantiles", "field": "x", "quantiles": [1]}, "quantiles", "is not a quantile"),
        ({"kind": "quantiles", "field": "x", "quantiles": [0.5, "p99"]}, "quantiles", "is not a quantile"),
        ({"kind": "quantiles", "field": "x", "quantiles": [True]}, "quantiles", "is not a quantile"),
        ({"kind": "quantiles", "field": "x", "quantiles": []}, "quantiles", "non-empty list"),
        ({"kind": "quantiles", "field": "x", "quantiles": 0.5}, "quantiles", "non-empty list"),
        ({"kind": "quantiles", "field": "x", "quantiles": [0.5, 0.5]}, "quantiles", "listed twice"),
        ({"kind": "quantiles", "field": "x", "k": 7}, "k", "from 8 to 65535"),
        ({"kind": "quantiles", "field": "x", "lg_k": 12}, "lg_k", "unknown key 'lg_k' for a quantiles metric"),
        ({"kind": "distinct", "field": "x", "quantiles": [0.5]}, "quantiles", "unknown key 'quantiles' for a distinct"),
        ({"kind": "sum", "field": "x", "k": 3}, "k", "unknown key 'k' for a sum metric"),
        ({"kind": "distinct"}, "field", "needs a field"),
        ({"kind": "distinct", "field": ""}, "field", "needs a field"),
        ({"kind": "count", "field": "x"}, "field", "takes no field"),
        ({"kind": "hll", "field": "x"}, "kind", "kind must be one of"),
        ({"field": "x"}, "kind", "kind must be one of"),
    ],
)
def test_metric_table_errors_name_the_option(spec: dict[str, Any], option: str, message: str) -> None:
    with pytest.raises(MetricError, match=message) as info:
        Metric.parse("m", spec)
    assert info.value.option == option
    assert info.value.fix  # the config error's "Fix: ..."


@pytest.mark.parametrize(("spec", "message"), [("distinct", "needs a field"), ("quantiles:", "needs a field"),
                                               ("hll:user_id", "unknown metric")])  # fmt: skip
def test_metric_short_form_errors(spec: str, message: str) -> None:
    with pytest.raises(MetricError, match=message):
        Metric.parse("m", spec)


# ---------------------------------------------------------------------------------------------
# estimate columns: one naming for every sink and `eventfleet results`


@pytest.mark.parametrize(
    ("q", "suffix"),
    [(0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (0.999, "p99_9"), (0.9999, "p99_99"), (0.001, "p0_1"),
     (0.125, "p12_5"), (0.1, "p10"), (0.25, "p25"), (0.75, "p75"), (0.07, "p7"), (0.33, "p33")],
)  # fmt: skip
def test_quantile_suffix(q: float, suffix: str) -> None:
    assert quantile_suffix(q) == suffix


def test_estimate_columns() -> None:
    assert estimate_columns(Metric("users", "distinct", "user_id")) == ("users",)
    latency = Metric("latency", "quantiles", "latency_ms", quantiles=(0.5, 0.95, 0.99, 0.999))
    assert estimate_columns(latency) == ("latency_p50", "latency_p95", "latency_p99", "latency_p99_9")
    assert estimate_columns(Metric("spend", "sum", "bytes_out")) == ("spend",)
    assert sketch_column(latency) == "latency_sketch"


# ---------------------------------------------------------------------------------------------
# config: [aggregate.metrics] with sketches


def _aggregate(metrics: dict[str, Any], group_by: list[str] | None = None) -> config.AggregateSettings:
    return config._aggregate({"group_by": group_by or ["endpoint"], "metrics": metrics}, TYPES)


def _aggregate_error(metrics: dict[str, Any], group_by: list[str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _aggregate(metrics, group_by)
    assert "\n" not in str(info.value)
    return info.value


def test_config_sketch_metrics() -> None:
    aggregate = _aggregate(
        {
            "requests": "count",
            "users": "distinct:user_id",
            "sessions": {"kind": "distinct", "field": "session", "lg_k": 14},
            "latency": {"kind": "quantiles", "field": "latency_ms", "quantiles": [0.5, 0.99, 0.999]},
            "size": "quantiles:bytes_out",
        }
    )
    assert aggregate.metrics == (
        Metric("requests", "count"),
        Metric("users", "distinct", "user_id"),
        Metric("sessions", "distinct", "session", lg_k=14),
        Metric("latency", "quantiles", "latency_ms", quantiles=(0.5, 0.99, 0.999)),
        Metric("size", "quantiles", "bytes_out"),
    )


@pytest.mark.parametrize(
    ("metrics", "key", "says"),
    [
        ({"lat": "quantiles:session"}, "aggregate.metrics.lat", "field 'session' has type string"),
        ({"lat": {"kind": "quantiles", "field": "tags"}}, "aggregate.metrics.lat.field", "has type complex"),
        ({"lat": "quantiles:region"}, "aggregate.metrics.lat", "has type nullable"),
        ({"u": "distinct:tags"}, "aggregate.metrics.u", "cannot be counted distinct"),
        ({"u": {"kind": "distinct", "field": "body"}}, "aggregate.metrics.u.field", "has type bytes"),
        ({"u": "distinct:nope"}, "aggregate.metrics.u", "is not in the schema"),
        ({"u": {"kind": "distinct", "field": "user_id", "lg_k": 30}}, "aggregate.metrics.u.lg_k", "from 4 to 21"),
        ({"l": {"kind": "quantiles", "field": "latency_ms", "quantiles": [99]}}, "aggregate.metrics.l.quantiles",
         "99 is not a quantile"),
        ({"l": {"kind": "quantiles", "field": "latency_ms", "percentiles": [0.5]}},
         "aggregate.metrics.l.percentiles", "unknown key"),
        ({"latency": "quantiles:latency_ms", "latency_p50": "count"}, "aggregate.metrics.latency_p50",
         "clashes with a column of metric 'latency'"),
        ({"users_sketch": "count", "users": "distinct:user_id"}, "aggregate.metrics.users",
         "its column 'users_sketch' clashes"),
        ({"l": {"kind": "quantiles", "field": "latency_ms", "quantiles": [0.5]}, "l_p50": "count"},
         "aggregate.metrics.l_p50", "clashes"),
    ],
)  # fmt: skip
def test_config_sketch_errors_name_the_key(metrics: dict[str, Any], key: str, says: str) -> None:
    err = _aggregate_error(metrics)
    assert err.key == key
    assert says in str(err)
    assert ". Fix: " in str(err)


def test_config_loads_sketches_and_their_column_types(tmp_path: Path) -> None:
    """Sketch metrics load; their estimates are plain columns (long, double) and each sketch has
    a bytes column of its own, after its estimates."""
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["requests"], "group_id": "g"},
        "schema": {"path": "request.avsc"},
        "window": {"size": "1m", "time_field": "ts"},
        "aggregate": {"group_by": ["endpoint"], "metrics": {
            "n": "count", "users": "distinct:user_id",
            "latency": {"kind": "quantiles", "field": "latency_ms", "quantiles": [0.5, 0.999]}}},
        "sink": {"type": "sqlite", "path": "out.db", "table": "stats"},
    }  # fmt: skip
    (tmp_path / "request.avsc").write_text(json.dumps(SCHEMA), encoding="utf-8")
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    pipeline = load(path)
    assert [m.name for m in pipeline.aggregate.metrics] == ["n", "users", "latency"]
    assert pipeline.column_types() == {
        "window_start": "long", "window_end": "long", "endpoint": "string", "n": "long", "users": "long",
        "users_sketch": "bytes", "latency_p50": "double", "latency_p99_9": "double", "latency_sketch": "bytes",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# distinct: accuracy, merge, bytes


def _row_values(rng: random.Random, n: int) -> list[int]:
    """n distinct user ids, each seen one to three times, shuffled."""
    ids = rng.sample(range(10**12), n)
    return [u for u in ids for _ in range(1 + (u % 3 == 0) + (u % 5 == 0))]


def test_distinct_through_the_updater_within_4_standard_errors() -> None:
    """One row per cardinality from 1 to 1,000,000, fed through the generated updater with the
    rows interleaved, and split across two partials merged at the end."""
    rng = random.Random(1)
    cardinalities = [1, 2, 3, 10, 50, 100, 384, 385, 1_000, 5_000, 20_000, 100_000, 1_000_000]
    events = [(n, u) for n in cardinalities for u in _row_values(rng, n)]
    rng.shuffle(events)
    metrics = [Metric("events", "count"), Metric("users", "distinct", "user_id")]
    update = compile_updater(["row"], metrics)
    left: dict[Any, Any] = {}
    right: dict[Any, Any] = {}
    for i, (row, user) in enumerate(events):
        update(left if i % 2 else right, 0, {"row": row, "user_id": user})
    for n in cardinalities:
        key = (0, n)
        partial = (
            merge(metrics, left[key], right[key]) if key in left and key in right else left.get(key, right.get(key))
        )
        assert partial is not None
        (estimate,) = estimates(metrics[1], partial[1])
        assert abs(estimate - n) <= 4 * rse(DEFAULT_LG_K) * n, (n, estimate)
        if n <= 384:  # the sketch is still an exact set of hashed values
            assert estimate == n


@pytest.mark.parametrize("lg_k", [4, 8, 14, 16])
def test_distinct_lg_k_within_4_standard_errors(lg_k: int) -> None:
    rng = random.Random(lg_k)
    metric = Metric("users", "distinct", "user_id", lg_k=lg_k)
    for n in (1_000, 50_000):
        sketch = new_sketch(metric)
        for u in _row_values(rng, n):
            sketch.update(u)
        (estimate,) = estimates(metric, sketch)
        assert abs(estimate - n) <= 4 * rse(lg_k) * n, (lg_k, n, estimate)
        assert sketch.lg_config_k == lg_k


def _merge_all(metric: Metric, parts: list[Any]) -> Any:
    out = new_sketch(metric)
    for part in parts:
        out = merge([metric], [out], [part])[0]
    return out


def _groupings(rng: random.Random, metric: Metric, parts: list[Any]) -> list[Any]:
    """The parts merged left to right, in reverse, shuffled, and as a random tree."""
    shuffled = parts[:]
    rng.shuffle(shuffled)
    tree = parts[:]
    while len(tree) > 1:
        i = rng.randrange(len(tree) - 1)
        tree[i : i + 2] = [merge([metric], [tree[i]], [tree[i + 1]])[0]]
    return [_merge_all(metric, parts), _merge_all(metric, parts[::-1]), _merge_all(metric, shuffled), tree[0]]


def _split(rng: random.Random, metric: Metric, values: list[Any], parts: int) -> list[Any]:
    sketches = [new_sketch(metric) for _ in range(parts)]
    for v in values:
        rng.choice(sketches).update(v)
    return sketches


@pytest.mark.parametrize("n", [1, 7, 100, 384])
def test_distinct_merge_below_the_exact_limit_equals_one_sketch(n: int) -> None:
    """Up to 3 x 2^(lg_k - 5) distinct values (384 at lg_k 12) an HLL sketch is a set of hashed
    values: merged in any order and grouping it equals one sketch fed everything."""
    rng = random.Random(n)
    metric = Metric("users", "distinct", "user_id")
    values = _row_values(rng, n)
    single = new_sketch(metric)
    for v in values:
        single.update(v)
    for merged in _groupings(rng, metric, _split(rng, metric, values, 6)):
        assert merged.get_estimate() == single.get_estimate()
        assert estimates(metric, merged) == (n,)


@pytest.mark.parametrize("n", [20_000, 300_000])
def test_distinct_merge_of_full_sketches_ignores_order_and_grouping(n: int) -> None:
    """Partials past the exact limit are register arrays: their union is a register-wise maximum,
    the same in any order and grouping, and within the error of one sketch fed everything (whose
    in-sketch estimator differs: the library guarantees the bound, not the same figure)."""
    rng = random.Random(n)
    metric = Metric("users", "distinct", "user_id")
    values = _row_values(rng, n)
    parts = _split(rng, metric, values, 5)
    assert all("HLL" in p.to_string().split("Current Mode")[1].split("\n")[0] for p in parts)
    merged = _groupings(rng, metric, parts)
    assert len({m.get_estimate() for m in merged}) == 1
    assert abs(merged[0].get_estimate() - n) <= 4 * rse(12) * n


def test_distinct_union_is_idempotent() -> None:
    """Merging a partial again changes nothing: a doubled flush is invisible in the estimate, so
    exactness rests on the flush's compare-and-set (docs/design.md), never on the sketch. (The
    first union of a lone full sketch may switch its estimator, within the error bound.)"""
    rng = random.Random(4)
    metric = Metric("users", "distinct", "user_id")
    for n in (50, 100_000):
        sketch = _split(rng, metric, _row_values(rng, n), 1)[0]
        other = _split(rng, metric, _row_values(rng, n), 1)[0]
        merged = merge([metric], [other], [sketch])[0]
        doubled = merge([metric], [merged], [sketch])[0]
        assert doubled.get_estimate() == merged.get_estimate()


def test_distinct_merge_leaves_its_inputs() -> None:
    metric = Metric("users", "distinct", "user_id")
    a, b = new_sketch(metric), new_sketch(metric)
    a.update(1)
    b.update(2)
    merged = merge([metric], [a], [b])[0]
    assert (a.get_estimate(), b.get_estimate(), round(merged.get_estimate())) == (1, 1, 2)


@pytest.mark.parametrize("n", [0, 1, 300, 5_000, 200_000])
def test_distinct_bytes_round_trip(n: int) -> None:
    metric = Metric("users", "distinct", "user_id", lg_k=11)
    sketch = new_sketch(metric)
    for u in range(n):
        sketch.update(f"user-{u}")
    data = sketch_to_bytes(metric, sketch)
    back = sketch_from_bytes(metric, data)
    assert back.get_estimate() == sketch.get_estimate()
    assert back.lg_config_k == 11
    assert sketch_to_bytes(metric, back) == data
    # the stored form reads back as a sketch that merges and updates: what a sink does with it
    back.update("someone new")
    merged = merge([metric], [back], [sketch])[0]
    assert abs(estimates(metric, merged)[0] - (n + 1)) <= 4 * rse(11) * (n + 1)
    # any DataSketches HLL reader takes it (the format the kafka sink will carry)
    assert hll_sketch.deserialize(data).get_estimate() == sketch.get_estimate()


def test_distinct_merges_sketches_of_another_lg_k() -> None:
    """A sketch stored with another lg_k (the config changed) still merges: down to the smaller."""
    small, large = Metric("u", "distinct", "x", lg_k=10), Metric("u", "distinct", "x", lg_k=12)
    a, b = new_sketch(small), new_sketch(large)
    for u in range(50_000):
        (a if u % 2 else b).update(u)
    merged = merge([large], [b], [a])[0]
    assert merged.lg_config_k == 10
    assert abs(merged.get_estimate() - 50_000) <= 4 * rse(10) * 50_000


# ---------------------------------------------------------------------------------------------
# quantiles: accuracy, merge, bytes


def _latencies(rng: random.Random, n: int) -> list[float]:
    """A long-tailed latency distribution, with ties (whole milliseconds half of the time)."""
    out = []
    for _ in range(n):
        v = rng.lognormvariate(3, 1.2)
        out.append(float(round(v)) if rng.random() < 0.5 else v)
    return out


@pytest.mark.parametrize(
    ("n", "k"), [(1, 200), (150, 200), (10_000, 200), (300_000, 200), (100_000, 50), (100_000, 1000)]
)
def test_quantiles_within_the_documented_rank_error(n: int, k: int) -> None:
    rng = random.Random(n * k)
    qs = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
    metric = Metric("latency", "quantiles", "latency_ms", quantiles=qs, k=k)
    values = _latencies(rng, n)
    parts = _split(rng, metric, values, 4)
    merged = _merge_all(metric, parts)
    ordered = sorted(values)
    eps = kll_rank_error(k)
    for sketch in (merged, *_split(rng, metric, values, 1)):
        assert sketch.n == n
        for q, got in zip(qs, estimates(metric, sketch), strict=True):
            low, high = exact_rank_range(ordered, got)
            assert low - eps <= q <= high + eps, (q, got, low, high, eps)
            assert got in set(values)  # a KLL quantile is one of the values seen


def test_quantiles_below_k_values_are_exact_and_merge_exactly() -> None:
    """Up to k values a KLL sketch keeps them all: its quantiles are the exact ones, merged in
    any order and grouping (the library compacts, at random, only past k)."""
    rng = random.Random(8)
    qs = (0.1, 0.5, 0.9, 0.99)
    metric = Metric("latency", "quantiles", "latency_ms", quantiles=qs)
    values = _latencies(rng, 180)
    ordered = sorted(values)
    exact = tuple(ordered[math.ceil(q * len(ordered)) - 1] for q in qs)  # the smallest value of rank >= q
    for merged in _groupings(rng, metric, _split(rng, metric, values, 5)):
        assert estimates(metric, merged) == exact
        assert (merged.n, merged.get_min_value(), merged.get_max_value()) == (180, ordered[0], ordered[-1])


def test_quantiles_merge_leaves_its_inputs() -> None:
    metric = Metric("latency", "quantiles", "latency_ms", quantiles=(0.5,))
    a, b = new_sketch(metric), new_sketch(metric)
    a.update(1.0)
    b.update(3.0)
    merged = merge([metric], [a], [b])[0]
    assert (a.n, b.n, merged.n) == (1, 1, 2)


@pytest.mark.parametrize("n", [1, 100, 50_000])
def test_quantiles_bytes_round_trip(n: int) -> None:
    rng = random.Random(n)
    metric = Metric("latency", "quantiles", "latency_ms", quantiles=(0.5, 0.95, 0.99))
    sketch = _split(rng, metric, _latencies(rng, n), 1)[0]
    data = sketch_to_bytes(metric, sketch)
    back = sketch_from_bytes(metric, data)
    assert estimates(metric, back) == estimates(metric, sketch)
    assert back.n == n
    assert sketch_from_bytes(metric, sketch_to_bytes(metric, back)).get_quantiles([0.3, 0.7]) == back.get_quantiles(
        [0.3, 0.7]
    )
    back.update(1e9)
    assert back.n == n + 1


def test_quantiles_of_an_empty_sketch() -> None:
    metric = Metric("latency", "quantiles", "latency_ms", quantiles=(0.5, 0.99))
    assert estimates(metric, new_sketch(metric)) == (None, None)


# ---------------------------------------------------------------------------------------------
# the generated code with sketches


def test_updater_folds_sketches_with_the_other_metrics() -> None:
    rng = random.Random(12)
    metrics = [
        Metric("n", "count"),
        Metric("users", "distinct", "user_id"),
        Metric("latency", "quantiles", "latency_ms", quantiles=(0.5, 0.9)),
        Metric("total", "sum", "bytes_out"),
        Metric("size", "quantiles", "bytes_out", quantiles=(0.5,)),
    ]
    fields = ["ts", "endpoint", "user_id", "latency_ms", "bytes_out"]
    update = compile_updater(["endpoint"], metrics, fields)
    rows: dict[str, list[tuple[Any, ...]]] = {"a": [], "b": []}
    state: dict[Any, Any] = {}
    for _ in range(150):  # below k and the HLL exact limit: every estimate is the exact answer
        record = (0, rng.choice("ab"), rng.randrange(40), rng.lognormvariate(3, 1), rng.randrange(10_000))
        rows[record[1]].append(record)
        update(state, 60_000, record)
    for endpoint, records in rows.items():
        partial = state[60_000, endpoint]
        latencies = sorted(r[3] for r in records)
        sizes = sorted(float(r[4]) for r in records)
        assert partial[0] == len(records)
        assert estimates(metrics[1], partial[1]) == (len({r[2] for r in records}),)
        assert estimates(metrics[2], partial[2]) == tuple(
            latencies[math.ceil(q * len(latencies)) - 1] for q in (0.5, 0.9)
        )
        assert partial[3] == sum(r[4] for r in records)
        assert estimates(metrics[4], partial[4]) == (sizes[math.ceil(0.5 * len(sizes)) - 1],)
    source = updater_source(["endpoint"], metrics, fields)
    assert "float(" in source and "while" not in source


def test_hopping_fold_with_sketches() -> None:
    """A distinct count over hopping windows: each window's estimate is the exact count of the
    users of its on-time events (small sets: the sketch is exact)."""
    size, step = 300_000, 60_000
    metrics = [Metric("users", "distinct", "user_id"), Metric("latency", "quantiles", "latency_ms", quantiles=(0.5,))]
    fold = compile_fold([], metrics, None, size, step, 0)
    rng = random.Random(6)
    state: dict[Any, Any] = {}
    truth: dict[int, set[int]] = {}
    watermark = NO_WATERMARK
    t = 0
    for _ in range(2_000):
        t += rng.randint(0, 3_000)
        e = {"ts": t - (rng.randint(0, 400_000) if rng.random() < 0.2 else 0), "user_id": rng.randrange(300),
             "latency_ms": 1.0}  # fmt: skip
        fold(state, e["ts"], e, watermark, None)
        first = e["ts"] - e["ts"] % step - size + step
        for s in range(first, e["ts"] + 1, step):
            if s + size > watermark:
                truth.setdefault(s, set()).add(e["user_id"])
        watermark = max(watermark, e["ts"])
    assert {key[0]: estimates(metrics[0], row[0])[0] for key, row in state.items()} == {
        s: len(users) for s, users in truth.items()
    }


def test_hll_type_is_the_one_merges_produce() -> None:
    metric = Metric("users", "distinct", "user_id")
    a = new_sketch(metric)
    assert a.tgt_type == hll_type()
    assert merge([metric], [a], [new_sketch(metric)])[0].tgt_type == hll_type()
