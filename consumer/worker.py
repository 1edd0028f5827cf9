"""The worker: one Kafka consumer in the group, the hot loop, and the rebalance handlers.

Follow an event: ``Source.consume`` hands a batch to :meth:`Worker.process`, which decodes it
(``decode``), places it in its window and checks lateness (``window``), folds it into the
partials (``aggregate``/``state``); every flush interval :func:`consumer.flush.flush` makes the
partials and positions durable, then commits the offsets to Kafka.
"""

import logging
import signal
import time
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from . import metrics
from .aggregate import compile_updater
from .config import Pipeline
from .decode import make_decoder
from .flush import commit_to_kafka, flush
from .sinks import Reject, Sink, TopicPartition, open_sink
from .source import Source
from .state import PartitionState, WorkerState

log = logging.getLogger(__name__)

BATCH_MAX_MESSAGES = 10_000
POLL_TIMEOUT_S = 0.5
SHUTDOWN_COMMIT_TRIES = 5


class Worker:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.group = pipeline.kafka.group_id
        self.decode = make_decoder(dict(pipeline.schema), pipeline.decoder)
        self.update = compile_updater(pipeline.aggregate.group_by, pipeline.aggregate.metrics)
        self.state = WorkerState()
        self.sink: Sink = open_sink(pipeline)
        self.source: Source | None = None
        self.stopping = False
        self.events = 0
        self.first_event_at: float | None = None  # perf_counter of the first and last batch
        self.last_event_at = 0.0

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until SIGTERM/SIGINT, then flush, commit, leave the group; returns 0."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        interval_s = self.pipeline.flush_interval_ms / 1000
        self.source = source = Source(self.pipeline, self._on_assign, self._on_revoke, self._on_lost)
        log.info("worker started: group %s, topics %s", self.group, ", ".join(self.pipeline.kafka.topics))
        next_flush = time.monotonic() + interval_s
        try:
            while not self.stopping:
                timeout = min(POLL_TIMEOUT_S, max(0.0, next_flush - time.monotonic()))
                messages = source.consume(BATCH_MAX_MESSAGES, timeout)
                if messages:
                    if self.first_event_at is None:
                        self.first_event_at = time.perf_counter()
                        log.info("first message at %.3f", time.time())
                    self.process(messages)
                    self.last_event_at = time.perf_counter()
                if time.monotonic() >= next_flush:
                    self._flush()
                    next_flush = time.monotonic() + interval_s
            self._flush()
            for _ in range(SHUTDOWN_COMMIT_TRIES):  # no later flush will retry a failed commit
                if commit_to_kafka(source.consumer, self.state):
                    break
                time.sleep(0.5)
        finally:
            source.close()
            self.sink.close()
        active_s = self.last_event_at - (self.first_event_at or self.last_event_at)
        rate = self.events / active_s if active_s else 0.0
        log.info("worker stopped: %d events in %.2f s from first to last, %.0f events/s", self.events, active_s, rate)
        return 0

    def process(self, messages: list[Any]) -> None:
        """The hot loop: every message of a batch, in offset order per partition.

        (``Any``: confluent-kafka types each Message accessor as optional, but a message
        without error has them all.)
        """
        parts = self.state.parts
        partials = self.state.partials
        decode, update = self.decode, self.update
        size = self.pipeline.window.size_ms
        closes_after = size + self.pipeline.window.grace_ms  # window end + grace, from its start
        time_field = self.pipeline.window.time_field
        for msg in messages:
            if msg.error() is not None:
                self._on_error(msg)
                continue
            part = parts.get((msg.topic(), msg.partition()))
            if part is None:
                continue  # revoked while in flight: its next owner reads it from the sink position
            try:
                record = decode(msg.value())
            except Exception as e:
                self._reject(part, msg, e)
                continue
            t = record[time_field] if time_field else msg.timestamp()[1]
            ws = t - t % size
            if t > part.watermark:
                part.watermark = t
            elif ws + closes_after <= part.watermark:
                part.late_events += 1  # late: counted with the position, never aggregated
                part.next_offset = msg.offset() + 1
                continue
            update(partials, ws, record)
            part.next_offset = msg.offset() + 1
        self.events += len(messages)
        metrics.EVENTS_CONSUMED.inc(len(messages))

    def _reject(self, part: PartitionState, msg: Any, error: Exception) -> None:
        offset = msg.offset()
        self.state.rejects.append(
            Reject(
                msg.topic(),
                msg.partition(),
                offset,
                msg.timestamp()[1],
                msg.key(),
                msg.value(),
                repr(error),
            )
        )
        part.invalid_events += 1
        part.next_offset = offset + 1
        metrics.EVENTS_INVALID.labels(part.topic, str(part.partition)).inc()
        log.warning(
            "undecodable message %s[%d]@%d kept as a reject: %r",
            part.topic,
            part.partition,
            offset,
            error,
        )

    def _on_error(self, msg: Any) -> None:
        error = msg.error()
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.error("consume error on %s[%s]: %s", msg.topic(), msg.partition(), error)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after a final flush", signal.Signals(signum).name)
        self.stopping = True

    # -- flush and rebalances ---------------------------------------------------------------

    def _flush(self) -> None:
        assert self.source is not None
        before = {k: (p.late_events, p.invalid_events) for k, p in self.state.parts.items()}
        result = flush(self.source.consumer, self.sink, self.group, self.state)
        if result.conflict is not None:
            self._rewind(list(self.state.parts))
            return
        for key, part in self.state.parts.items():
            late = part.late_events - before[key][0]
            if late:
                metrics.EVENTS_LATE.labels(part.topic, str(part.partition)).inc(late)
                log.info("%d late events in %s[%d] not aggregated (counted)", late, *key)

    def _on_assign(self, partitions: list[KafkaPartition]) -> None:
        """Resume each new partition from the position and watermark the sink holds."""
        assert self.source is not None
        keys = [(p.topic, p.partition) for p in partitions]
        stored = self.sink.read_positions(self.group, keys)
        for p, key in zip(partitions, keys, strict=True):
            position = stored.get(key)
            if position is None:  # a brand-new sink: the committed Kafka offset, else earliest
                self.state.parts[key] = PartitionState(*key)
            else:
                p.offset = position.next_offset
                self.state.parts[key] = PartitionState.from_position(position)
        self.source.consumer.incremental_assign(partitions)

    def _on_revoke(self, partitions: list[KafkaPartition]) -> None:
        """Flush everything before the partitions go, so the next owner starts where we ended."""
        self._flush()
        for p in partitions:
            self.state.parts.pop((p.topic, p.partition), None)

    def _on_lost(self, partitions: list[KafkaPartition]) -> None:
        """Lost partitions are never flushed: their new owner re-reads from the sink position.
        Partials are merged across partitions, so all are dropped and the rest rewound."""
        for p in partitions:
            self.state.parts.pop((p.topic, p.partition), None)
        self._rewind(list(self.state.parts))

    def _rewind(self, keys: list[TopicPartition]) -> None:
        """Drop all unflushed work and seek these partitions back to the sink's positions."""
        assert self.source is not None
        self.state.clear()
        stored = self.sink.read_positions(self.group, keys)
        for key in keys:
            position = stored.get(key)
            if position is None:  # never flushed: back to where a brand-new sink starts
                self.state.parts[key] = PartitionState(*key)
                committed = self.source.consumer.committed([KafkaPartition(*key)], timeout=10)[0]
                offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            else:
                self.state.parts[key] = PartitionState.from_position(position)
                offset = position.next_offset
            self.source.consumer.seek(KafkaPartition(key[0], key[1], offset))
        log.warning("rewound %d partitions to the sink's positions", len(keys))


def run(pipeline: Pipeline) -> int:
    return Worker(pipeline).run()
