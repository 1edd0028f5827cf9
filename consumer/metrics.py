"""Every Prometheus metric eventfleet exports, declared once, units in the names.

Under the supervisor (``eventfleet run``) each process writes its values to
PROMETHEUS_MULTIPROC_DIR and the supervisor serves them summed over the workers on one port.
"""

import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

EVENTS_CONSUMED = Counter("eventfleet_events_consumed_total", "Messages read from Kafka.")
EVENTS_AGGREGATED = Counter("eventfleet_events_aggregated_total", "Events folded into a window's aggregates.")
EVENTS_LATE = Counter(
    "eventfleet_events_late_total", "Events not aggregated because their window had closed.", ["topic", "partition"]
)
EVENTS_INVALID = Counter(
    "eventfleet_events_invalid_total", "Messages that could not be decoded (kept as rejects).", ["topic", "partition"]
)
DEAD_LETTERS = Counter(
    "eventfleet_dead_letters_total", "Messages the dead-letter topic acknowledged.", ["topic", "partition"]
)
FLUSHES = Counter("eventfleet_flushes_total", "Flushes by outcome.", ["outcome"])
FLUSH_SECONDS = Histogram("eventfleet_flush_duration_seconds", "Time to write one flush to the sink.")
ROWS_WRITTEN = Counter("eventfleet_sink_rows_written_total", "Aggregate rows merged into the sink.")
SINK_RETRIES = Counter("eventfleet_sink_retries_total", "Flush retries scheduled after a sink error.")
SINK_FAILURES = Counter("eventfleet_sink_failures_total", "Flush attempts the sink failed (nothing written).")
SINK_OUTAGE_SECONDS = Gauge(
    "eventfleet_sink_outage_seconds", "How long the sink has been failing (0: it works).", multiprocess_mode="livemax"
)
PAUSED_PARTITIONS = Gauge(
    "eventfleet_paused_partitions", "Partitions paused while the sink or the registry is down.",
    multiprocess_mode="livesum",
)  # fmt: skip
REGISTRY_OUTAGE_SECONDS = Gauge(
    "eventfleet_registry_outage_seconds",
    "How long the schema registry has been failing to give a writer schema (0: it works).",
    multiprocess_mode="livemax",
)
REGISTRY_REQUESTS = Counter("eventfleet_registry_requests_total", "Requests sent to the schema registry.")
SCHEMAS_CACHED = Gauge(
    "eventfleet_writer_schemas_cached", "Writer schemas fetched from the registry and resolved.",
    multiprocess_mode="livemax",
)  # fmt: skip
COMMITS = Counter("eventfleet_kafka_commits_total", "Offset commits to Kafka by outcome.", ["outcome"])
REBALANCES = Counter("eventfleet_rebalances_total", "Rebalance callbacks by kind.", ["kind"])
ASSIGNED_PARTITIONS = Gauge(
    "eventfleet_assigned_partitions", "Partitions assigned to the workers.", multiprocess_mode="livesum"
)
CONSUMER_LAG = Gauge(
    "eventfleet_consumer_lag_messages",
    "Broker high watermark minus committed offset, per partition (librdkafka statistics).",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
TRACKED_KEYS = Gauge(
    "eventfleet_tracked_keys", "Aggregate keys held in memory since the last flush.", multiprocess_mode="livesum"
)
WORKER_RESTARTS = Counter("eventfleet_worker_restarts_total", "Workers restarted by the supervisor.", ["reason"])
WATCHDOG_KILLS = Counter("eventfleet_watchdog_kills_total", "Workers killed for not heartbeating.")
# eventfleet tail (consumer/ingest): lines are counted as produced or rejected when their transaction commits
TAIL_LINES_READ = Counter("eventfleet_tail_lines_read_total", "Complete lines read from files (empty ones included).")
TAIL_LINES_PRODUCED = Counter("eventfleet_tail_lines_produced_total", "Lines produced as records, committed.")
TAIL_LINES_REJECTED = Counter(
    "eventfleet_tail_lines_rejected_total", "Lines that did not parse or fit the schema, committed to the dead letters."
)
TAIL_LINES_EMPTY = Counter("eventfleet_tail_lines_empty_total", "Empty lines skipped.")
TAIL_BYTES_BEHIND = Gauge(
    "eventfleet_tail_bytes_behind", "File size minus the position after the last complete line read.", ["file"],
    multiprocess_mode="livemax",
)  # fmt: skip
TAIL_FILES_OPEN = Gauge("eventfleet_tail_files_open", "Files the tailer holds open.", multiprocess_mode="livesum")
TAIL_TRANSACTIONS = Counter("eventfleet_tail_transactions_total", "Tailer transactions by outcome.", ["outcome"])


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges from the multiprocess directory (counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
