"""What sketch metrics and hopping windows cost in the fold: the generated per-event code alone.

    python bench/sketches.py [--events 1000000] [--repeat 5]

The example pipeline's events (examples/ad-stats.toml, the generator and seed of bench/run.py)
are decoded once into the tuples the worker's projection gives; each variant then folds all of
them the way the worker's hot loop does (window start, watermark and lateness inlined, then the
generated updater; for hopping windows the generated fold), ``--repeat`` times, the variants
taking turns so that the load of a shared machine falls on all of them alike. It reports events/s
from the CPU time of the best run (``time.process_time``: a busy machine's waits left out), and
the median run's. Variants: the example's metrics (count, sum, min, max), count + sum only, each
with one ``distinct:user_id`` and one ``quantiles:price_micros`` added, and hopping 5m windows
every 1m.

The flush side is measured too: per row, its sketches to bytes (what a sink writes), and the
merge a sink does with a stored row (bytes -> sketch, merge, -> bytes); with the rows a flush
touches per event, an amortized cost per event. The end-to-end estimate adds the fold and flush
differences to the CPU per event of eventfleet-1 in the newest bench/results run; the measured
end-to-end figure comes with ``make bench`` once the worker and sinks use sketches.
Writes bench/results/sketches-<time>.json.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer import config  # noqa: E402
from consumer.aggregate import (  # noqa: E402
    SKETCH_KINDS,
    Metric,
    compile_fold,
    compile_updater,
    merge,
    sketch_from_bytes,
    sketch_to_bytes,
)
from consumer.produce import events as event_stream  # noqa: E402

RESULTS = ROOT / "bench" / "results"
START_MS = 1_767_225_600_000  # bench/run.py's event times and generator settings
MAX_DELAY_MS = 20_000
EVENTS_PER_S = 2000.0
FIELDS = ("ts", "campaign_id", "event_type", "price_micros", "user_id")  # the projection's order
HOP_SIZE_MS, HOP_STEP_MS = 300_000, 60_000

SUMS = [Metric("events", "count"), Metric("spend", "sum", "price_micros")]
SKETCHES = [Metric("users", "distinct", "user_id"), Metric("price", "quantiles", "price_micros")]


def tumbling_loop(records: Sequence[tuple[Any, ...]], update: Callable[..., None], size: int, grace: int) -> int:
    """The worker's hot loop (worker.Worker.process) without Kafka and decoding."""
    partials: dict[Any, Any] = {}
    watermark = -(2**63)
    closes_after = size + grace
    late = 0
    for record in records:
        t = record[0]
        ws = t - t % size
        if t > watermark:
            watermark = t
        elif ws + closes_after <= watermark:
            late += 1
            continue
        update(partials, ws, record)
    return len(partials)


def hopping_loop(records: Sequence[tuple[Any, ...]], fold: Callable[..., int]) -> int:
    """The same with the one-line hopping integration."""
    partials: dict[Any, Any] = {}
    watermark = -(2**63)
    late = 0
    for record in records:
        t = record[0]
        late += fold(partials, t, record, watermark, None)
        if t > watermark:
            watermark = t
    return len(partials)


def cpu_seconds(run: Callable[[], Any]) -> float:
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def flush_cost(records: Sequence[tuple[Any, ...]], metrics: list[Metric], size: int) -> dict[str, Any]:
    """Per row of a full fold: the sketches to bytes, and a sink's merge with a stored copy."""
    update = compile_updater(["campaign_id", "event_type"], metrics, FIELDS)
    state: dict[Any, Any] = {}
    for r in records:
        update(state, r[0] - r[0] % size, r)
    sketches = [(i, m) for i, m in enumerate(metrics) if m.kind in SKETCH_KINDS]
    rows = list(state.values())
    start = time.process_time()
    stored = [[sketch_to_bytes(m, row[i]) for i, m in sketches] for row in rows]
    to_bytes_s = time.process_time() - start
    start = time.process_time()
    for row, data in zip(rows, stored, strict=True):
        for (i, m), b in zip(sketches, data, strict=True):
            sketch_to_bytes(m, merge([m], [sketch_from_bytes(m, b)], [row[i]])[0])
    merge_s = time.process_time() - start
    sizes = {m.name: statistics.mean(len(d[j]) for d in stored) for j, (_i, m) in enumerate(sketches)}
    return {
        "rows": len(rows),
        "to_bytes_us_per_row": to_bytes_s / len(rows) * 1e6,
        "sink_merge_us_per_row": merge_s / len(rows) * 1e6,
        "flush_ns_per_event": (to_bytes_s + merge_s) / len(records) * 1e9,
        "sketch_bytes_per_row": sizes,
    }


def newest_pipeline_cpu() -> tuple[str, float] | None:
    """CPU microseconds per event of eventfleet-1 in the newest bench/results/<time>.json."""
    for path in sorted(RESULTS.glob("[0-9]*.json"), reverse=True):
        summary = json.loads(path.read_text()).get("summary", {})
        if "eventfleet-1" in summary:
            return path.name, summary["eventfleet-1"]["cpu_s_per_m"]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    pipeline = config.load(ROOT / "examples" / "ad-stats.toml")
    size, grace = pipeline.window.size_ms, pipeline.window.grace_ms
    stream = event_stream(pipeline, 7, START_MS, EVENTS_PER_S, 0.02, MAX_DELAY_MS)
    records = [tuple(e[f] for f in FIELDS) for e in islice(stream, args.events)]
    example = list(pipeline.aggregate.metrics)
    variants = {
        "example": example,
        "example+distinct": [*example, SKETCHES[0]],
        "example+quantiles": [*example, SKETCHES[1]],
        "example+sketches": [*example, *SKETCHES],
        "count+sum": SUMS,
        "count+sum+sketches": [*SUMS, *SKETCHES],
    }
    group_by = list(pipeline.aggregate.group_by)
    runs: dict[str, Callable[[], Any]] = {}
    for name, metrics in variants.items():
        update = compile_updater(group_by, metrics, FIELDS)
        runs[name] = lambda u=update: tumbling_loop(records, u, size, grace)  # type: ignore[misc]
    for name in ("example", "example+sketches"):
        fold = compile_fold(group_by, variants[name], FIELDS, HOP_SIZE_MS, HOP_STEP_MS, grace)
        runs[f"{name} hopping 5m/1m"] = lambda f=fold: hopping_loop(records, f)  # type: ignore[misc]
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, run in runs.items():
            seconds[name].append(cpu_seconds(run))
    results: dict[str, Any] = {}
    for name, times in seconds.items():
        best, median = min(times), statistics.median(times)
        results[name] = {"events_per_s": len(records) / best, "ns_per_event": best / len(records) * 1e9,
                         "median_events_per_s": len(records) / median, "cpu_seconds": times}  # fmt: skip
        print(f"{name:32} {len(records) / best:>12,.0f} events/s  {best / len(records) * 1e9:7.0f} ns/event"
              f"  (median run {len(records) / median:,.0f} events/s)")  # fmt: skip

    flush = flush_cost(records, variants["example+sketches"], size)
    print(f"flush: {flush['rows']:,} rows, {flush['to_bytes_us_per_row']:.1f} us/row to bytes, "
          f"{flush['sink_merge_us_per_row']:.1f} us/row sink merge, {flush['flush_ns_per_event']:.0f} ns/event; "
          f"sketch bytes per row {flush['sketch_bytes_per_row']}")  # fmt: skip

    def ratio(a: str, b: str) -> float:
        return float(results[a]["events_per_s"] / results[b]["events_per_s"])

    ratios = {
        "example+sketches/example": ratio("example+sketches", "example"),
        "count+sum+sketches/count+sum": ratio("count+sum+sketches", "count+sum"),
        "hopping example/example": ratio("example hopping 5m/1m", "example"),
        "hopping example+sketches/example": ratio("example+sketches hopping 5m/1m", "example"),
    }
    estimate: dict[str, Any] = {}
    base = newest_pipeline_cpu()
    if base is not None:
        source, cpu_us = base
        added_ns = results["example+sketches"]["ns_per_event"] - results["example"]["ns_per_event"]
        added_ns += flush["flush_ns_per_event"]
        estimate = {
            "from": source,
            "eventfleet_1_cpu_us_per_event": cpu_us,
            "added_ns_per_event": added_ns,
            "estimated_ratio": cpu_us * 1000 / (cpu_us * 1000 + added_ns),
        }
    for key, value in ratios.items():
        print(f"{key:36} {value:.2f}x (best runs)")
    if estimate:
        print(f"end to end, estimated from {estimate['from']}: {estimate['eventfleet_1_cpu_us_per_event']:.2f} us "
              f"+ {estimate['added_ns_per_event']:.0f} ns per event, {estimate['estimated_ratio']:.2f}x the sums-only "
              "pipeline's throughput")  # fmt: skip

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = RESULTS / f"sketches-{stamp}.json"
    doc = {
        "run": stamp,
        "events": len(records),
        "repeat": args.repeat,
        "machine": {
            "python": platform.python_version(),
            "datasketches": _version("datasketches"),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "variants": {name: [f"{m.kind}:{m.field}" if m.field else m.kind for m in ms] for name, ms in variants.items()},
        "results": results,
        "ratios": ratios,
        "flush": flush,
        "end_to_end_estimate": estimate,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
