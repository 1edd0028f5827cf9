"""Distinct counts and quantiles end to end (real broker, each sink): two workers over keys
spread across partitions, one SIGKILLed mid-stream and restarted, then (SQL sinks) a replay
from a time. Ground truth is plain Python over the produced events: the exact distinct users and
the exact prices of every row. Each row's distinct estimate must be within 4 standard errors of
its true count, and where DataSketches guarantees it (below 3 * 2^(lg_k - 5) distinct values,
docs/metrics.md) equal to the estimate of one sketch fed the whole row; each quantile within
KLL's documented rank error of the exact one. The scalar metrics stay exact (assert_exact)."""

import math
from typing import Any

import pytest
from datasketches import hll_sketch, hll_union, kll_doubles_sketch, tgt_hll_type

from consumer.config import load
from consumer.sinks.kafka import output_schema

from .conftest import GRACE_MS, WINDOW_MS, Kafka, assert_exact, generate, ground_truth, read_deltas, run_through_kills
from .test_replay import FLOOR, FROM, replay

pytestmark = pytest.mark.integration

LG_K = 12
K = 200
QUANTILES = (0.5, 0.95, 0.99)
METRICS = 'users = "distinct:user_id"\nprice = "quantiles:price_micros"'
EXACT_BELOW = 3 * 2 ** (LG_K - 5)  # distinct values: any merge order gives one sketch's estimate
RSE = 1.04 / math.sqrt(2**LG_K)  # HLL's relative standard error at lg_k
RANK_ERROR = kll_doubles_sketch.get_normalized_rank_error(K, False)  # one quantile, 99% confidence

Key = tuple[Any, ...]


def value_schema(p) -> dict[str, Any]:
    """The pipeline's output record, its window times read as plain longs (as conftest's are)."""
    schema = output_schema(load(p.path))
    for f in schema["fields"]:
        if isinstance(f["type"], dict) and "logicalType" in f["type"]:
            f["type"] = f["type"]["type"]
    return schema


def sketch_truth(events: list[tuple[int, Any]]) -> dict[Key, tuple[list[int], list[int]]]:
    """Per (window, campaign, type): the user ids and prices of the events aggregated, under the
    lateness rule of docs/design.md (a partition's watermark in offset order)."""
    rows: dict[Key, tuple[list[int], list[int]]] = {}
    watermark: dict[int, int] = {}
    for p, r in events:
        t = r["ts"]
        start = t // WINDOW_MS * WINDOW_MS
        watermark[p] = max(watermark.get(p, t), t)
        if start + WINDOW_MS + GRACE_MS <= watermark[p]:
            continue
        users, prices = rows.setdefault((start, r["campaign_id"], r["event_type"]), ([], []))
        users.append(r["user_id"])
        prices.append(r["price_micros"])
    return rows


def sink_rows(p) -> dict[Key, tuple[int, list[float]]]:
    """(distinct estimate, quantiles) per row as a user reads them: the SQL sinks' columns (the
    stored sketch must give the same estimate), or the kafka sink's deltas merged downstream."""
    out: dict[Key, tuple[int, list[float]]] = {}
    if p.sink == "kafka":
        merged: dict[Key, tuple[Any, Any]] = {}
        for d, _ in read_deltas(p.bootstrap, p.out_topic, value_schema=value_schema(p)):
            key = (d["window_start"], d["campaign_id"], d["event_type"])
            union, kll = merged.setdefault(key, (hll_union(LG_K), kll_doubles_sketch(K)))
            union.update(hll_sketch.deserialize(d["users_sketch"]))
            kll.merge(kll_doubles_sketch.deserialize(d["price_sketch"]))
        for key, (union, kll) in merged.items():
            out[key] = (round(union.get_estimate()), kll.get_quantiles(list(QUANTILES), inclusive=True))
        return out
    rows = p.query(
        f"SELECT window_start, campaign_id, event_type, users, users_sketch, price_p50, price_p95, price_p99 "
        f"FROM {p.table}"
    )
    assert rows is not None
    for r in rows:
        assert round(hll_sketch.deserialize(bytes(r[4])).get_estimate()) == r[3]
        out[r[:3]] = (r[3], list(r[5:]))
    return out


def assert_sketches(p, events: list[tuple[int, Any]], since: int | None = None) -> int:
    """Every row (from window ``since`` on) against the truth; returns the rows checked."""
    truth = sketch_truth(events)
    got = sink_rows(p)
    if since is not None:
        truth = {k: v for k, v in truth.items() if k[0] >= since}
        got = {k: v for k, v in got.items() if k[0] >= since}
    assert got.keys() == truth.keys()
    exact_regime = 0
    for key, (users, prices) in truth.items():
        estimate, quantiles = got[key]
        n = len(set(users))
        assert abs(estimate - n) <= 4 * RSE * n + 0.5, (key, estimate, n)
        if n < EXACT_BELOW:
            one = hll_sketch(LG_K, tgt_hll_type.HLL_8)
            for u in users:
                one.update(u)
            assert estimate == round(one.get_estimate()), (key, estimate, n)
            exact_regime += 1
        ordered = sorted(prices)
        for q, v in zip(QUANTILES, quantiles, strict=True):
            below = sum(1 for x in ordered if x < v) / len(ordered)  # v's ranks: from below to at_most
            at_most = sum(1 for x in ordered if x <= v) / len(ordered)
            assert below - RANK_ERROR <= q <= at_most + RANK_ERROR, (key, q, v, below, at_most)
    assert 0 < exact_regime < len(truth)  # both regimes of the HLL are exercised
    assert any(len(prices) > K for _, prices in truth.values())  # and KLL's compaction
    return len(truth)


def run_through_sigkills(kafka: Kafka, p, events: list[tuple[int, Any]]) -> dict[int, int]:
    """Two workers while the events flow; one SIGKILLed three times and restarted."""
    return run_through_kills(kafka, p, events, 12.0, (1.3, 2.1, 1.7), partitions=8)


@pytest.mark.parametrize("sink", ["sqlite", "postgres", "kafka"])
def test_sketches_through_sigkills(kafka: Kafka, pipeline, sink: str) -> None:
    p = pipeline(partitions=8, flush="700ms", sink=sink, metrics=METRICS)
    p.value_schema = value_schema(p)  # the kafka sink's records carry the sketches
    events = generate(160_000, 8, seed=71)
    ends = run_through_sigkills(kafka, p, events)
    assert_exact(p, ground_truth(events), ends)
    assert assert_sketches(p, events) > 300


@pytest.mark.parametrize("sink", ["sqlite", "postgres"])
def test_sketches_after_a_replay(kafka: Kafka, pipeline, sink: str) -> None:
    """A replay from a time recomputes the sketches of the windows from then on, and keeps those
    before it as they were (their bytes included)."""
    p = pipeline(partitions=8, flush="700ms", sink=sink, metrics=METRICS)
    events = generate(160_000, 8, seed=72)
    ends = run_through_sigkills(kafka, p, events)
    before = p.query(f"SELECT * FROM {p.table} WHERE window_start < ? ORDER BY 1, 3, 4", (FLOOR,))
    p.execute([(f"UPDATE {p.table} SET users = users + 1000 WHERE window_start >= ?", (FLOOR,))])  # damage
    done = replay(p, "--from-timestamp", str(FROM), "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert p.query(f"SELECT * FROM {p.table} WHERE window_start < ? ORDER BY 1, 3, 4", (FLOOR,)) == before
    assert_exact(p, ground_truth(events), ends)
    assert assert_sketches(p, events, since=FLOOR) > 100


def test_a_row_of_a_million_distinct_users(kafka: Kafka, pipeline) -> None:
    """The top of the range: one row (one window, one key) of 1,000,000 distinct users spread
    over 8 partitions and two workers, one SIGKILLed three times: the estimate merged from every
    partition's flushes is within 4 standard errors of 1,000,000, and the quantiles within KLL's
    rank error of the exact ones."""
    p = pipeline(partitions=8, flush="700ms", metrics=METRICS)
    n = 1_000_000
    start = 1_800_000_000_000 // WINDOW_MS * WINDOW_MS
    one_row = {"campaign_id": "big", "event_type": "impression"}
    events = [  # in time order in every partition: none late, all in one window
        (partition, {**r, **one_row, "ts": start + i * (WINDOW_MS - 1) // n, "user_id": i})
        for i, (partition, r) in enumerate(generate(n, 8, seed=73))
    ]
    ends = run_through_sigkills(kafka, p, events)
    assert_exact(p, ground_truth(events), ends)
    ((users, price),) = sink_rows(p).values()
    assert abs(users - n) <= 4 * RSE * n, users
    ordered = sorted(r["price_micros"] for _, r in events)
    for q, v in zip(QUANTILES, price, strict=True):
        below = sum(1 for x in ordered if x < v) / n
        at_most = sum(1 for x in ordered if x <= v) / n
        assert below - RANK_ERROR <= q <= at_most + RANK_ERROR, (q, v, below, at_most)
