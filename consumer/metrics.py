"""Every Prometheus metric eventfleet exports, declared once, units in the names."""

from prometheus_client import Counter, Histogram

EVENTS_CONSUMED = Counter("eventfleet_events_consumed_total", "Messages read from Kafka.")
EVENTS_LATE = Counter(
    "eventfleet_events_late_total",
    "Events not aggregated because their window had closed.",
    ["topic", "partition"],
)
EVENTS_INVALID = Counter(
    "eventfleet_events_invalid_total",
    "Messages that could not be decoded (kept as rejects).",
    ["topic", "partition"],
)
FLUSHES = Counter("eventfleet_flushes_total", "Flushes by outcome.", ["outcome"])
FLUSH_SECONDS = Histogram("eventfleet_flush_duration_seconds", "Time to write one flush to the sink.")
ROWS_WRITTEN = Counter("eventfleet_sink_rows_written_total", "Aggregate rows merged into the sink.")
SINK_RETRIES = Counter("eventfleet_sink_retries_total", "Sink writes retried after an error.")
REBALANCES = Counter("eventfleet_rebalances_total", "Rebalance callbacks by kind.", ["kind"])
