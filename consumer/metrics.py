"""Every Prometheus metric eventfleet exports, declared once, units in the names.

Under the supervisor (``eventfleet run``) each process writes its values to
PROMETHEUS_MULTIPROC_DIR and the supervisor serves them summed over the workers on one port.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess


class WorkerMetrics:
    """The metrics of one worker's loop and flushes, in ``registry``. A worker is handed an
    instance (:data:`WORKER` in production: the process's registry, which /metrics serves; a
    fresh ``CollectorRegistry`` in tests, so that each test reads only its own worker's values)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.events_consumed = Counter("eventfleet_events_consumed_total", "Messages read from Kafka.", registry=r)
        self.events_aggregated = Counter(
            "eventfleet_events_aggregated_total", "Events folded into a window's aggregates.", registry=r
        )
        self.events_late = Counter(
            "eventfleet_events_late_total",
            "Events not aggregated because their window had closed (hopping windows: (event, window) pairs).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.events_invalid = Counter(
            "eventfleet_events_invalid_total", "Messages that could not be decoded (kept as rejects).",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.flushes = Counter("eventfleet_flushes_total", "Flushes by outcome.", ["outcome"], registry=r)
        self.flush_seconds = Histogram(
            "eventfleet_flush_duration_seconds", "Time to write one flush to the sink.", registry=r
        )
        self.rows_written = Counter(
            "eventfleet_sink_rows_written_total", "Aggregate rows merged into the sink.", registry=r
        )
        self.sink_retries = Counter(
            "eventfleet_sink_retries_total", "Flush retries scheduled after a sink error.", registry=r
        )
        self.sink_failures = Counter(
            "eventfleet_sink_failures_total", "Flush attempts the sink failed (nothing written).", registry=r
        )
        self.sink_outage_seconds = Gauge(
            "eventfleet_sink_outage_seconds", "How long the sink has been failing (0: it works).",
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.paused_partitions = Gauge(
            "eventfleet_paused_partitions", "Partitions paused while the sink or the registry is down.",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip
        self.registry_outage_seconds = Gauge(
            "eventfleet_registry_outage_seconds",
            "How long the schema registry has been failing to give a writer schema (0: it works).",
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.registry_requests = Counter(
            "eventfleet_registry_requests_total", "Requests sent to the schema registry.", registry=r
        )
        self.schemas_cached = Gauge(
            "eventfleet_writer_schemas_cached", "Writer schemas fetched from the registry and resolved.",
            multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.commits = Counter(
            "eventfleet_kafka_commits_total", "Offset commits to Kafka by outcome.", ["outcome"], registry=r
        )
        self.rebalances = Counter("eventfleet_rebalances_total", "Rebalance callbacks by kind.", ["kind"], registry=r)
        self.assigned_partitions = Gauge(
            "eventfleet_assigned_partitions", "Partitions assigned to the workers.", multiprocess_mode="livesum",
            registry=r,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "eventfleet_consumer_lag_messages",
            "Broker high watermark minus committed offset, per partition (librdkafka statistics).",
            ["topic", "partition"], multiprocess_mode="livemax", registry=r,
        )  # fmt: skip
        self.tracked_keys = Gauge(
            "eventfleet_tracked_keys", "Aggregate keys held in memory since the last flush.",
            multiprocess_mode="livesum", registry=r,
        )  # fmt: skip


WORKER = WorkerMetrics()  # the process's worker metrics, served by /metrics
DEAD_LETTERS = Counter(
    "eventfleet_dead_letters_total", "Messages the dead-letter topic acknowledged.", ["topic", "partition"]
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
