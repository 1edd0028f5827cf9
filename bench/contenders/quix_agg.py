"""Quix Streams contender: the example pipeline (ad-stats) written with Quix Streams' own windowing.

Environment (its own venv: quixstreams pins confluent-kafka < 2.13):

    python3 -m venv bench/.venv-quix && bench/.venv-quix/bin/pip install quixstreams fastavro

Tested with quixstreams 3.28.1 (which pulled confluent-kafka 2.12.2, fastavro 1.13.1) on Python 3.11.

Run (from /work/main, with the venv's python):

    bench/.venv-quix/bin/python bench/contenders/quix_agg.py --bootstrap 127.0.0.1:9092 \
        --topic TOPIC --group GROUP --schema schemas/ad_event.avsc --events N --out RESULT.json

What it computes: tumbling 60 s windows on the event time `ts` (timestamp extractor) with 30 s
grace, per (campaign_id, event_type): events = count, spend = sum(price_micros),
min_price = min(price_micros), max_price = max(price_micros). Windows are
[floor(ts/60000)*60000, +60000), which is how Quix aligns tumbling windows (start = ts - ts % size).

Shape of the Quix pipeline:
  * Messages are keyed by campaign_id, and Quix windows are always per message key. Instead of a
    repartitioning `group_by` to (campaign_id, event_type) -- which would produce every message
    again to a repartition topic and consume it back, roughly doubling the per-message work --
    the window stays on the campaign_id key and its reduced value is a dict
    event_type -> [count, sum, min, max]. That gives the same numbers per (campaign_id,
    event_type) and is what a careful Quix user would write for a key that is already a prefix of
    the grouping. (With `group_by` the per-key event time that closes windows would also be per
    (campaign_id, event_type) instead of per campaign_id.)
  * `.reduce(reducer, initializer)` (one state value per key and window) rather than
    `.agg(events=Count(), spend=Sum(...), ...)`: the built-in aggregators cannot split by
    event_type without the repartition above.
  * `.final()` with the default closing strategy ("key"): a window of a campaign closes when the
    largest `ts` seen for that campaign passes window end + grace. A record whose window is
    already closed for its key is dropped by Quix (counted here via `on_late`, whose only other
    effect is to silence Quix's per-record warning log).
  * Values are decoded with Quix's own `AvroDeserializer` (fastavro schemaless_reader) from the
    writer schema with `logicalType` stripped, so `ts` is an int of epoch ms (not a datetime).
  * With --registry URL instead of --schema (the quix-registry contender), the values are framed
    (Confluent wire format) and decoded by the same `AvroDeserializer` given
    `schema_registry_client_config=SchemaRegistryClientConfig(url=URL)`: Quix then hands each
    value to confluent-kafka's `schema_registry.avro.AvroDeserializer` (writer schema by id,
    cached by the client; with Quix's serialization context, so the client's subject name
    strategy runs per value). The registered schema's `timestamp-millis` gives `ts` as a
    datetime there, which the timestamp extractor turns back into epoch ms (integer arithmetic).
    Quix's client config has no request timeout setting; the watchdog below covers a hang.

Settings (Application defaults unless listed; see the Quix docs pages "Configuration" and
"Checkpointing"):
  * processing_guarantee="at-least-once" (the default): the docs say exactly-once costs extra
    latency/overhead (transactions), so the default is also the throughput choice.
  * commit_interval=5.0 s (the default) and changelog topics on (the default): the docs say longer
    commit intervals only cut checkpoint IO; with ~200 keys a checkpoint is a few hundred state
    updates. Measured on this 2-core machine (1M events, 3 interleaved rounds): 5 s ~32.2k ev/s,
    commit_interval=30 ~32.4k, use_changelog_topics=False ~31.3k, both ~32.9k -- all within
    run-to-run noise (the per-message Python path of the engine dominates), so the defaults stay
    (they are what a production Quix app runs with, and 5 s matches eventfleet's flush interval).
    Note: each run creates a changelog topic "changelog__<group>--<topic>--tumbling_window_60000_reduce"
    on the broker (same partition count as the input); a fresh group per run means one per run.
  * auto_offset_reset="earliest" and a fresh consumer_group (given by the harness).
  * state_dir: a fresh temporary folder, deleted at exit, so runs never share RocksDB state.
  * loglevel="WARNING": only to keep Quix's INFO start-up lines out of the harness output.
  * consumer_extra_config: the fetch settings every confluent-kafka contender gets (common.FETCH,
    the ones eventfleet uses), so that the comparison is about the processing.

Completion: `Application(on_message_processed=...)` is called by Quix after each input message is
fully processed (window updated, closed windows emitted). It only increments an int; the first
call stamps first_message_at, the N-th stamps done_at and calls `app.stop()`, which ends the poll
loop after that message (Quix then commits a final checkpoint). A watchdog thread stops the app
if no message was processed for --idle-timeout seconds (default 120), and the script then exits 1
with "processed" < N.

With --sketches (the quix-sketches contender) each event type's state also holds what the
distinct and quantiles metrics of eventfleet-1-sketches compute, with Quix's own `.reduce()`
and plain JSON-serializable state (Quix has no sketch aggregators): the distinct user ids
(a dict used as a set) and every price, turned at window close into the exact distinct count
`users` and the exact nearest-rank `price_p50`, `price_p95`, `price_p99`.

RESULT.json: {"first_message_at", "done_at", "processed", "late_dropped", "windows": [...]} where
"windows" holds every window Quix emitted from `.final()`, one entry per (window, campaign_id,
event_type); windows still open at the end are not listed. "late_dropped" (extra) counts the
records Quix dropped because their window was already closed for their key.
"""

import argparse
import datetime
import json
import logging
import math
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

WINDOW_MS = 60_000
GRACE_MS = 30_000


def strip_logical_types(schema: Any) -> Any:
    """The schema without any "logicalType", so timestamp-millis decodes to a plain int."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(s) for s in schema]
    return schema


def initializer(value: dict) -> dict:
    p = value["price_micros"]
    return {value["event_type"]: [1, p, p, p]}


def reducer(agg: dict, value: dict) -> dict:
    et = value["event_type"]
    p = value["price_micros"]
    m = agg.get(et)
    if m is None:
        agg[et] = [1, p, p, p]
    else:
        m[0] += 1
        m[1] += p
        if p < m[2]:
            m[2] = p
        elif p > m[3]:
            m[3] = p
    return agg


QUANTILES = (0.5, 0.95, 0.99)


def initializer_sketches(value: dict) -> dict:
    p = value["price_micros"]
    return {value["event_type"]: [1, p, p, p, {str(value["user_id"]): 1}, [p]]}


def reducer_sketches(agg: dict, value: dict) -> dict:
    et = value["event_type"]
    p = value["price_micros"]
    m = agg.get(et)
    if m is None:
        agg[et] = [1, p, p, p, {str(value["user_id"]): 1}, [p]]
    else:
        m[0] += 1
        m[1] += p
        if p < m[2]:
            m[2] = p
        elif p > m[3]:
            m[3] = p
        m[4][str(value["user_id"])] = 1
        m[5].append(p)
    return agg


def nearest_rank(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q * len(ordered)) - 1)])


def ts_extractor(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    return value["ts"]


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
ONE_MS = datetime.timedelta(milliseconds=1)


def ts_extractor_datetime(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    """epoch ms of a ``timestamp-millis`` that the registry's deserializer returned as a datetime."""
    return (value["ts"] - EPOCH) // ONE_MS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    values = ap.add_mutually_exclusive_group(required=True)
    values.add_argument("--schema", help="writer schema (.avsc) of the schemaless Avro values")
    values.add_argument("--registry", help="schema registry URL of framed values (Confluent wire format)")
    ap.add_argument("--events", type=int, required=True, help="stop after this many input messages")
    ap.add_argument("--out", required=True, help="where to write RESULT.json")
    ap.add_argument("--sketches", action="store_true", help="also distinct users and price quantiles, exact")
    ap.add_argument("--idle-timeout", type=float, default=120.0, help="give up after this many s without progress")
    args = ap.parse_args(argv)

    from common import FETCH
    from quixstreams import Application
    from quixstreams.models.serializers.avro import AvroDeserializer
    from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig

    if args.registry:
        deserializer = AvroDeserializer(schema_registry_client_config=SchemaRegistryClientConfig(url=args.registry))
        extractor = ts_extractor_datetime
    else:
        with open(args.schema) as f:
            deserializer = AvroDeserializer(schema=strip_logical_types(json.load(f)))
        extractor = ts_extractor

    n_target = args.events
    processed = 0
    first_at = 0.0
    done_at = 0.0
    late = 0
    windows: list[dict] = []
    app: Application

    def on_processed(_topic: str, _partition: int, _offset: int) -> None:
        nonlocal processed, first_at, done_at
        processed += 1
        if processed == 1:
            first_at = time.time()
        if processed == n_target:
            done_at = time.time()
            app.stop()

    def on_late(*_: Any) -> bool:
        nonlocal late
        late += 1
        return False  # counted; no per-record warning log

    def emit(value: dict, key: Any, _timestamp: int, _headers: Any) -> None:
        start = value["start"]
        for event_type, (count, total, lo, hi, *exact) in value["value"].items():
            row = {
                "window_start": start,
                "campaign_id": key,
                "event_type": event_type,
                "events": count,
                "spend": total,
                "min_price": lo,
                "max_price": hi,
            }
            if exact:
                users, prices = exact
                row["users"] = len(users)
                row |= {f"price_p{round(q * 100)}": nearest_rank(prices, q) for q in QUANTILES}
            windows.append(row)

    state_dir = tempfile.mkdtemp(prefix="quix-agg-state-")
    try:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            on_message_processed=on_processed,
            loglevel="WARNING",
            consumer_extra_config=dict(FETCH),
        )
        topic = app.topic(
            args.topic,
            key_deserializer="str",
            value_deserializer=deserializer,
            timestamp_extractor=extractor,
        )
        sdf = app.dataframe(topic)
        sdf = (
            sdf.tumbling_window(duration_ms=WINDOW_MS, grace_ms=GRACE_MS, on_late=on_late)
            .reduce(
                reducer=reducer_sketches if args.sketches else reducer,
                initializer=initializer_sketches if args.sketches else initializer,
            )
            .final()
        )
        sdf.update(emit, metadata=True)

        stop_watch = threading.Event()

        def watchdog() -> None:
            last, since = -1, time.monotonic()
            while not stop_watch.wait(1.0):
                if processed != last:
                    last, since = processed, time.monotonic()
                elif time.monotonic() - since > args.idle_timeout:
                    print(
                        f"quix_agg: no progress for {args.idle_timeout:.0f} s at {processed:,} of "
                        f"{n_target:,} messages; stopping",
                        file=sys.stderr,
                    )
                    app.stop()
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        app.run()
        stop_watch.set()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

    result = {
        "first_message_at": first_at,
        "done_at": done_at if processed >= n_target else time.time(),
        "processed": processed,
        "late_dropped": late,
        "windows": windows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    secs = result["done_at"] - first_at if processed else 0.0
    print(
        f"quix_agg: {processed:,} messages in {secs:.2f} s ({processed / secs if secs > 0 else 0:,.0f} events/s), "
        f"{len(windows):,} closed window rows, {late:,} late records dropped",
        file=sys.stderr,
    )
    return 0 if processed >= n_target else 1


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
