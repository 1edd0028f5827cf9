"""The commit protocol: aggregates and positions in one sink transaction, then the Kafka commit.

This is the one place where results become durable. The order of the steps is the guarantee;
see docs/design.md, "The flush protocol".
"""

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException

from . import faults
from .dlq import DeadLetters
from .errors import PositionConflict, SinkError
from .metrics import WorkerMetrics
from .sinks import Sink
from .source import Source
from .state import WorkerState

log = logging.getLogger(__name__)


@dataclass
class FlushResult:
    rows: int = 0
    partitions: int = 0
    conflict: PositionConflict | None = None


def flush(
    source: Source,
    sink: Sink,
    group: str,
    state: WorkerState,
    metrics: WorkerMetrics,
    dead_letters: DeadLetters | None = None,
) -> FlushResult:
    """Make everything read since the last flush durable, exactly once.

    1. Take the partials changed since the last flush, with each partition's next offset and
       watermark as of the last event included (``state.pending()``).
    2. Send the rejects to the dead-letter topic and wait for the broker's acknowledgement, then
       in one sink transaction, merge the partials and compare-and-set the position rows. If
       another worker moved a position, the sink rolls back and raises PositionConflict: the
       partials are discarded and the caller rewinds to the sink's positions.
    3. Only after that commit: commit the same offsets to Kafka, for lag tools. A failure here
       is harmless, the sink's positions are the source of truth. (A sink whose positions are
       the Kafka offsets, the kafka sink, committed them in its transaction: skipped.)
    4. Drop the flushed partials from memory.
    """
    # 1. what to write
    positions = state.pending()
    kafka_commit = not sink.positions_in_kafka  # else the sink's transaction committed the offsets
    if not positions and not state.partials:
        if kafka_commit:
            commit_to_kafka(source, state, metrics)  # offsets a failed Kafka commit left behind, if any
        return FlushResult()
    started = time.perf_counter()
    # 2. dead letters acknowledged, then one transaction: partials merged + positions compare-and-set
    try:
        if dead_letters is not None and len(state.rejects) > state.rejects_sent:
            dead_letters.send(state.rejects[state.rejects_sent :])
            state.rejects_sent = len(state.rejects)  # a retried flush does not send them twice
        faults.reach("before_sink_write")
        sink.write(group, state.partials, positions, state.rejects)
    except PositionConflict as conflict:
        metrics.flushes.labels("conflict").inc()
        log.warning("flush rolled back: %s; discarding partials and rewinding", conflict)
        return FlushResult(conflict=conflict)
    except SinkError:
        metrics.sink_failures.inc()  # nothing was written; the caller retries with backoff
        raise
    state.written(positions)  # from here a crash re-reads nothing that was merged
    metrics.flush_seconds.observe(time.perf_counter() - started)
    faults.reach("after_sink_commit")
    # 3. Kafka commit of the offsets the sink now holds (and any an earlier failure left behind)
    if kafka_commit:
        commit_to_kafka(source, state, metrics)
    # 4. forget what is now durable
    rows = len(state.partials)
    state.clear()
    metrics.flushes.labels("ok").inc()
    metrics.rows_written.inc(rows)
    log.info(
        "flushed %d rows, positions %s",
        rows,
        " ".join(f"{w.new.topic}[{w.new.partition}]={w.new.next_offset}" for w in positions),
    )
    return FlushResult(rows=rows, partitions=len(positions))


def commit_to_kafka(source: Source, state: WorkerState, metrics: WorkerMetrics) -> bool:
    """Commit each partition's sink position to Kafka, for lag tools; True when all went through.
    Never raises: a failure is retried at the next flush, and the sink's positions stay the
    source of truth."""
    parts = [p for p in state.parts.values() if p.uncommitted]
    if not parts:
        return True
    offsets = {(p.topic, p.partition): p.stored_offset or 0 for p in parts}
    try:
        failed = source.commit(offsets)
    except KafkaException as e:
        metrics.commits.labels("failed").inc()
        log.warning("Kafka offset commit failed, retried at the next flush (the sink holds the positions): %s", e)
        return False
    for p in parts:
        if (p.topic, p.partition) not in failed:
            p.committed_offset = p.stored_offset
    metrics.commits.labels("failed" if failed else "ok").inc()
    if failed:
        log.warning("Kafka offset commit failed for %s, retried at the next flush", sorted(failed))
    return not failed
