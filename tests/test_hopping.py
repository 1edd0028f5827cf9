"""Hopping windows: the window math (consumer.window), the generated fold (consumer.aggregate)
and ``[window] step`` (consumer.config), against ground truth computed in plain Python.

The rules are those of docs/design.md, "Events, windows, lateness": an event belongs to every
window ``[s, s + size)`` with ``s`` a multiple of ``step`` and ``s <= t < s + size``; each window
is judged late apart (``s + size + grace <= watermark``), and the late count counts the
(event, window) pairs dropped.
"""

import copy
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from consumer import config
from consumer.aggregate import Metric, compile_fold, compile_updater, fold_source, updater_source
from consumer.config import WindowSettings, load
from consumer.errors import ConfigError, SinkError
from consumer.sinks import open_sink
from consumer.window import NO_WATERMARK, is_late, window_is_late, window_start, window_starts

MINUTE = 60_000
METRICS = [
    Metric("events", "count"),
    Metric("spend", "sum", "price"),
    Metric("low", "min", "price"),
    Metric("high", "max", "price"),
]


def _starts_by_definition(t: int, size: int, step: int) -> list[int]:
    """Every multiple of step s with s <= t < s + size, by scanning (no modular arithmetic)."""
    s = (t - size) // step * step - step
    out = []
    while s <= t:
        if s <= t < s + size:
            out.append(s)
        s += step
    return out


# ---------------------------------------------------------------------------------------------
# consumer.window


@pytest.mark.parametrize(
    ("t", "size", "step", "expected"),
    [
        (0, 5, 1, [-4, -3, -2, -1, 0]),
        (7, 10, 5, [0, 5]),
        (10, 10, 5, [5, 10]),
        (9, 10, 5, [0, 5]),
        (-1, 10, 5, [-10, -5]),
        (5 * MINUTE + 1, 5 * MINUTE, MINUTE, [MINUTE, 2 * MINUTE, 3 * MINUTE, 4 * MINUTE, 5 * MINUTE]),
        (59_999, MINUTE, MINUTE, [0]),
    ],
)
def test_window_starts_examples(t: int, size: int, step: int, expected: list[int]) -> None:
    assert window_starts(t, size, step) == expected


def test_window_starts_random_matches_definition() -> None:
    rng = random.Random(17)
    for _ in range(3_000):
        step = rng.choice([1, 3, 1_000, MINUTE, rng.randint(1, 50_000)])
        size = step * rng.choice([1, 2, 3, 5, 12, rng.randint(1, 30)])
        t = rng.randint(-(10**12), 10**12)
        starts = window_starts(t, size, step)
        assert starts == _starts_by_definition(t, size, step)
        assert len(starts) == size // step


def test_window_starts_with_step_equal_to_size_is_tumbling() -> None:
    rng = random.Random(3)
    for _ in range(1_000):
        size = rng.randint(1, 10**7)
        t = rng.randint(-(10**12), 10**12)
        assert window_starts(t, size, size) == [window_start(t, size)]


def test_window_is_late_is_the_tumbling_rule_per_window() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        size, grace = rng.choice([1_000, MINUTE]), rng.choice([0, 500, 30_000])
        t, watermark = rng.randint(-(10**7), 10**7), rng.randint(-(10**7), 10**7)
        assert is_late(t, size, grace, watermark) == window_is_late(window_start(t, size), size, grace, watermark)


def test_window_is_late_boundary() -> None:
    # window [60000, 120000), grace 10 s: closed once the watermark reaches 130000
    assert window_is_late(MINUTE, MINUTE, 10_000, 130_000) is True
    assert window_is_late(MINUTE, MINUTE, 10_000, 129_999) is False
    assert window_is_late(MINUTE, MINUTE, 10_000, NO_WATERMARK) is False


# ---------------------------------------------------------------------------------------------
# the generated fold against ground truth


def _events(rng: random.Random, n: int, disorder_ms: int) -> list[dict[str, Any]]:
    """Times that mostly move forward, with some events up to ``disorder_ms`` behind."""
    t = rng.randint(-10 * MINUTE, 10 * MINUTE)
    out = []
    for i in range(n):
        t += rng.randint(0, 4_000)
        late_by = rng.randint(0, disorder_ms) if rng.random() < 0.3 else 0
        out.append({"i": i, "ts": t - late_by, "c": rng.choice("abc"), "price": rng.randint(-1_000, 10**6)})
    return out


def _ground_truth(
    events: list[dict[str, Any]], size: int, step: int, grace: int, group_by: list[str]
) -> tuple[dict[Any, list[Any]], int, int]:
    """Per window and group: count, sum, min, max of the on-time (event, window) pairs; the late
    pairs; the events late for some of their windows only. One partition, in offset order."""
    rows: dict[Any, list[int]] = defaultdict(list)
    watermark = NO_WATERMARK
    late_pairs = partly_late = 0
    for e in events:
        t = e["ts"]
        starts = _starts_by_definition(t, size, step)
        late_here = 0
        for s in starts:
            if s + size + grace <= watermark:
                late_here += 1
            else:
                rows[(s, *(e[g] for g in group_by))].append(e["price"])
        late_pairs += late_here
        partly_late += 0 < late_here < len(starts)
        watermark = max(watermark, t)
    truth = {key: [len(v), sum(v), min(v), max(v)] for key, v in rows.items()}
    return truth, late_pairs, partly_late


def _run_fold(events: list[dict[str, Any]], fold: Any, fields: list[str] | None = None) -> tuple[dict[Any, Any], int]:
    state: dict[Any, Any] = {}
    watermark = NO_WATERMARK
    late = 0
    for e in events:
        t = e["ts"]
        record = e if fields is None else tuple(e[f] for f in fields)
        late += fold(state, t, record, watermark, ("topic", 0))
        if t > watermark:
            watermark = t
    return state, late


@pytest.mark.parametrize(
    ("size", "step", "grace"),
    [
        (5 * MINUTE, MINUTE, 0),
        (5 * MINUTE, MINUTE, 30_000),
        (10 * MINUTE, 5 * MINUTE, 10_000),
        (MINUTE, 10_000, 0),
        (2 * MINUTE, 2 * MINUTE, 5_000),  # step = size: the fold is the tumbling rule
        (MINUTE, 1_000, 0),
    ],
)
@pytest.mark.parametrize("group_by", [["c"], []])
def test_fold_matches_ground_truth(size: int, step: int, grace: int, group_by: list[str]) -> None:
    rng = random.Random(f"{size}/{step}/{grace}/{group_by}")
    events = _events(rng, 4_000, disorder_ms=2 * size)
    truth, late_pairs, partly_late = _ground_truth(events, size, step, grace, group_by)
    fold = compile_fold(group_by, METRICS, None, size, step, grace)
    state, late = _run_fold(events, fold)
    assert state == truth
    assert late == late_pairs
    assert late_pairs > 0  # the data does exercise lateness
    if step < size:
        assert partly_late > 50  # events late for their oldest windows only, and on time for the rest


def test_fold_on_tuples_and_by_partition() -> None:
    """The worker's form: a tuple of the projection's fields, and keys apart per partition for
    a sink that wants them (sinks.partials_by_partition)."""
    size, step, grace = 5 * MINUTE, MINUTE, 20_000
    rng = random.Random(11)
    events = _events(rng, 3_000, disorder_ms=3 * size)
    fields = ["ts", "price", "i", "c"]
    truth, late_pairs, _ = _ground_truth(events, size, step, grace, ["c"])
    fold = compile_fold(["c"], METRICS, fields, size, step, grace, by_partition=True)
    state, late = _run_fold(events, fold, fields)
    assert state == {((key[0], "topic", 0), *key[1:]): row for key, row in truth.items()}
    assert late == late_pairs


@pytest.mark.parametrize("floor_minutes", [-3, 0, 7, 20])
def test_fold_replay_floor_skips_the_kept_windows(floor_minutes: int) -> None:
    """Replaying from window ``floor``: the events read before the replay fold only into windows
    starting at or after it (the others were kept and hold them), and are judged late exactly as
    the first time."""
    size, step, grace = 5 * MINUTE, MINUTE, 10_000
    floor = floor_minutes * MINUTE
    rng = random.Random(floor_minutes)
    events = _events(rng, 3_000, disorder_ms=3 * size)
    truth, late_pairs, _ = _ground_truth(events, size, step, grace, ["c"])
    fold = compile_fold(["c"], METRICS, None, size, step, grace, replay=True)
    state: dict[Any, Any] = {}
    watermark, late = NO_WATERMARK, 0
    for e in events:
        late += fold(state, e["ts"], e, watermark, None, floor)
        watermark = max(watermark, e["ts"])
    assert state == {key: row for key, row in truth.items() if key[0] >= floor}
    assert late == late_pairs
    everything = compile_fold(["c"], METRICS, None, size, step, grace, replay=True)
    assert _run_fold(events, lambda *a: everything(*a, NO_WATERMARK)) == (truth, late_pairs)


def test_fold_with_step_equal_to_size_equals_the_worker_rule() -> None:
    """step = size: the fold gives what the worker's tumbling hot loop (updater + inlined
    lateness) gives today."""
    size, grace = MINUTE, 15_000
    rng = random.Random(2)
    events = _events(rng, 3_000, disorder_ms=3 * size)
    update = compile_updater(["c"], METRICS)
    tumbling: dict[Any, Any] = {}
    watermark, late_events = NO_WATERMARK, 0
    for e in events:
        t = e["ts"]
        ws = t - t % size
        if t > watermark:
            watermark = t
        elif ws + size + grace <= watermark:
            late_events += 1
            continue
        update(tumbling, ws, e)
    state, late = _run_fold(events, compile_fold(["c"], METRICS, None, size, size, grace))
    assert state == tumbling
    assert late == late_events


def test_fold_event_late_for_its_oldest_windows_only() -> None:
    size, step, grace = 5 * MINUTE, MINUTE, 0
    fold = compile_fold([], [Metric("n", "count")], None, size, step, grace)
    state: dict[Any, Any] = {}
    # windows of t = 4.5 min: starts 0, 1, 2, 3, 4 min; with the watermark at 7 min the windows
    # starting at 0, 1 and 2 min (ends 5, 6, 7 min) are closed, those at 3 and 4 min are open
    assert fold(state, 270_000, {}, 7 * MINUTE, None) == 3
    assert state == {(3 * MINUTE,): [1], (4 * MINUTE,): [1]}
    assert fold(state, 270_000, {}, 10 * MINUTE, None) == 5  # every window closed: nothing folded
    assert fold(state, 270_000, {}, NO_WATERMARK, None) == 0
    assert state == {(s * MINUTE,): [1] for s in (0, 1, 2)} | {(3 * MINUTE,): [2], (4 * MINUTE,): [2]}


def test_fold_late_for_negative_times() -> None:
    fold = compile_fold([], [Metric("n", "count")], None, 10, 5, 2)
    state: dict[Any, Any] = {}
    # t = -1: windows [-10, 0) and [-5, 5), closed at watermarks 2 and 7
    assert fold(state, -1, {}, 2, None) == 1
    assert fold(state, -1, {}, 1, None) == 0
    assert fold(state, -1, {}, 7, None) == 2
    assert state == {(-10,): [1], (-5,): [2]}


def test_fold_source_shapes() -> None:
    """Tumbling pipelines keep the loop-free updater; the fold loops over the windows only."""
    assert "while" not in updater_source(["c"], METRICS) and "for " not in updater_source(["c"], METRICS)
    source = fold_source(["c"], METRICS, ["ts", "c", "price"], 5 * MINUTE, MINUTE, 0)
    assert source.startswith("def fold(state, t, r, watermark, partition):")
    assert source.count("while") == 1 and "for " not in source


@pytest.mark.parametrize(("size", "step"), [(5, 2), (5, 6), (5, 0), (5, -1)])
def test_fold_refuses_a_step_that_does_not_divide_the_size(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="divide"):
        compile_fold([], METRICS, None, size, step, 0)


# ---------------------------------------------------------------------------------------------
# [window] step


ROOT = Path(__file__).parents[1]
BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": "g"},
    "schema": {"path": str(ROOT / "schemas" / "ad_event.avsc")},
    "window": {"size": "5m", "grace": "30s", "time_field": "ts"},
    "aggregate": {"group_by": ["campaign_id"], "metrics": {"events": "count"}},
    "sink": {"type": "sqlite", "path": "out.db", "table": "stats"},
}
TYPES = {"ts": "long"}


def _load(tmp_path: Path, window: dict[str, Any]) -> config.Pipeline:
    doc = copy.deepcopy(BASE)
    doc["window"] = window
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


def test_step_defaults_to_size(tmp_path: Path) -> None:
    window = _load(tmp_path, {"size": "5m"}).window
    assert (window.size_ms, window.step_ms, window.hopping) == (5 * MINUTE, 5 * MINUTE, False)
    assert WindowSettings(MINUTE, 0, None).step_ms == MINUTE


@pytest.mark.parametrize(
    ("size", "step", "step_ms"), [("5m", "1m", MINUTE), ("1h", "15m", 15 * MINUTE), ("1m", "500ms", 500)]
)
def test_step_parsed(size: str, step: str, step_ms: int) -> None:
    window = config._window({"size": size, "step": step}, TYPES)
    assert window.step_ms == step_ms
    assert window.hopping


def test_step_equal_to_size_is_tumbling(tmp_path: Path) -> None:
    window = _load(tmp_path, {"size": "5m", "step": "300s"}).window
    assert window.step_ms == window.size_ms and not window.hopping


@pytest.mark.parametrize(
    ("step", "says", "fix"),
    [
        ("2m", "does not divide window.size (5m)", 'step = "100s"'),
        ("7s", "does not divide window.size (5m)", 'step = "6s"'),
        ("10m", "is longer than window.size (5m)", "at most 5m"),
        ("0s", "must be more than zero", 'step = "1m"'),
        ("1 minute", "not a duration", 'step = "30s"'),
        ("-1m", "not a duration", 'step = "30s"'),
        (60, "must be a non-empty string", ""),
    ],
)
def test_step_errors_name_the_key_and_the_fix(tmp_path: Path, step: Any, says: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"size": "5m", "step": step})
    assert info.value.key == "window.step"
    message = str(info.value)
    assert says in message and fix in message
    assert "\n" not in message


def test_hopping_pipeline_loads(tmp_path: Path) -> None:
    window = _load(tmp_path, {"size": "5m", "step": "1m"}).window
    assert (window.size_ms, window.step_ms, window.hopping) == (5 * MINUTE, MINUTE, True)


def test_a_table_of_tumbling_windows_is_refused_to_a_hopping_pipeline(tmp_path: Path) -> None:
    """Folding overlapping windows into the rows of tumbling ones would be silently wrong: the
    table's signature names the step of a hopping pipeline (and not of a tumbling one, so tables
    written before hopping windows existed keep theirs)."""
    open_sink(_load(tmp_path, {"size": "5m"})).close()
    open_sink(_load(tmp_path, {"size": "5m", "step": "5m"})).close()  # step = size: the same windows
    with pytest.raises(SinkError) as info:
        open_sink(_load(tmp_path, {"size": "5m", "step": "1m"}))
    assert '"step_ms": 60000' in str(info.value) and "Use another [sink] table" in str(info.value)
