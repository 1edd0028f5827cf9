"""The worker: one Kafka consumer in the group, the hot loop, and the rebalance handlers.

Follow an event: ``Source.consume`` hands a batch to :meth:`Worker.process`, which decodes it
(``decode``), places it in its window and checks lateness (``window``), folds it into the
partials (``aggregate``/``state``); every flush interval :func:`consumer.flush.flush` makes the
partials and positions durable, then commits the offsets to Kafka.
"""

import contextlib
import ctypes
import faulthandler
import gc
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from . import faults, metrics, profiling
from .aggregate import compile_updater
from .backoff import backoff_s
from .config import Pipeline
from .decode import FramedDecoder, Projection, make_projection
from .dlq import DeadLetters, InvalidCaps
from .errors import EventfleetError, SinkError
from .fleet import EXIT_FENCED, EXIT_RECYCLE, HEARTBEAT, JOINED
from .flush import commit_to_kafka, flush
from .registry import RegistryUnavailable, connect
from .sinks import Sink, open_sink, partials_by_partition, positions_in_kafka, use_consumer
from .source import Source
from .state import PartitionState, WorkerState
from .types import Reject, TopicPartition

log = logging.getLogger(__name__)

BATCH_MAX_MESSAGES = 10_000
POLL_TIMEOUT_S = 0.5
SHUTDOWN_COMMIT_TRIES = 5
HEARTBEAT_INTERVAL_S = 1.0
GC_YOUNG_THRESHOLD = 100_000  # see Worker.run
SINK_RETRY_MAX_S = 30.0  # backoff ceiling between flush attempts while the sink is down
SHUTDOWN_FLUSH_S = 20.0  # within the supervisor's default 30 s shutdown grace
REGISTRY_RETRY_MAX_S = 5.0  # backoff ceiling between tries while the schema registry is down


class Worker:
    def __init__(
        self,
        pipeline: Pipeline,
        worker_id: int = 0,
        heartbeat_fd: int | None = None,
        group_instance_id: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.worker_id = worker_id
        self.group_instance_id = group_instance_id  # static membership: a supervisor slot's id (fleet.py)
        self.heartbeat_fd = heartbeat_fd  # a pipe to the supervisor, None when unsupervised
        self.recycle = False
        self.group = pipeline.kafka.group_id
        # an event decodes to a tuple of the fields it needs, the time field first
        fields = pipeline.event_fields()
        self.framed: FramedDecoder | None = None  # values framed by a schema registry
        self.schemaless: Projection | None = None
        if pipeline.registry is not None:
            self.framed = FramedDecoder(dict(pipeline.schema), fields, connect(pipeline.registry))
        else:
            self.schemaless = make_projection(dict(pipeline.schema), fields)
        self.update = compile_updater(pipeline.aggregate.group_by, pipeline.aggregate.metrics, fields)
        self.state = WorkerState()
        self.sink: Sink = open_sink(pipeline)
        self.by_partition = partials_by_partition(self.sink)
        self.source: Source | None = None
        self.stopping = False
        self.invalid_caps = InvalidCaps(pipeline.dlq)
        self.dead_letters: DeadLetters | None = None
        self.outage_since: float | None = None  # monotonic time the sink started failing
        self.outage_attempts = 0
        self.paused_for: set[str] = set()  # why every partition is paused: "sink", "registry"
        # Owned partitions rewound while the sink could not be read: out of state.parts (nothing of
        # theirs is aggregated, flushed or committed) and paused until the sink gives their positions.
        self.unplaced: set[TopicPartition] = set()
        self.registry_outage: RegistryOutage | None = None
        self.registry_requests = 0  # of them, already counted in the metrics
        self.events = 0
        self.batch_events = 0  # messages of the last batch, error events excluded
        self.first_event_at: float | None = None  # perf_counter of the first and last batch
        self.last_event_at = 0.0
        # Catching up: a backlog (an event older than the flush interval) read since the last
        # flush is flushed as soon as every owned partition has reached its end.
        self.behind = False
        self.ended: dict[TopicPartition, int | None] = {}  # partition -> its next_offset at its last end event

    @property
    def decode(self) -> Projection:
        """Value -> the event's fields (read once per batch: a framed decoder is replaced by a
        new function when a new writer schema appears)."""
        if self.framed is not None:
            return self.framed.decode
        assert self.schemaless is not None
        return self.schemaless

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until SIGTERM/SIGINT, then flush, commit, leave the group; returns 0
        (or EXIT_RECYCLE when the memory guard stopped it)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack
        signal.signal(signal.SIGUSR2, profiling.start)  # kill -USR2: a sampling profile to a file
        if self.heartbeat_fd is not None:
            _die_with_parent()
        interval_s = self.pipeline.flush_interval_ms / 1000
        faults.reach("before_join")
        self.source = source = Source(
            self.pipeline, self._on_assign, self._on_revoke, self._on_lost, self._on_stats, self.group_instance_id
        )
        self.dead_letters = DeadLetters(self.pipeline) if self.pipeline.dlq.enabled else None
        # The cyclic garbage collector: every batch allocates 10,000 Message objects, which with
        # the default threshold (700) starts a young collection 14 times a batch, about 5% of the
        # loop's time, for garbage that reference counting frees anyway. The start-up objects are
        # frozen out of every later collection, and young collections wait for 100,000 objects
        # that outlive their batch (new keys of the state).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD)
        log.info("worker started: group %s, topics %s", self.group, ", ".join(self.pipeline.kafka.topics))
        next_flush = next_beat = time.monotonic()
        next_flush += interval_s
        fenced = False
        try:
            use_consumer(self.sink, source.consumer)
            while not self.stopping:
                timeout = min(POLL_TIMEOUT_S, max(0.0, next_flush - time.monotonic()))
                messages = source.consume(BATCH_MAX_MESSAGES, timeout)
                if messages:
                    received, received_wall = time.perf_counter(), time.time()
                    self.process(messages)
                    if self.batch_events:  # not only end-of-partition events
                        if self.first_event_at is None:
                            self.first_event_at = received
                            log.info("first message at %.3f", received_wall)
                        self.last_event_at = time.perf_counter()
                        self.behind = self.behind or self._backlog(messages, interval_s)
                self.after_batch(self.batch_events if messages else 0)
                now = time.monotonic()
                due = now >= next_flush
                if not due and self.behind and self.outage_since is None and self._caught_up():
                    due = True
                    log.info("caught up with the backlog: flushing now")
                if due:
                    next_flush = time.monotonic() + self._flush_or_pause(interval_s)
                if self.registry_outage is not None and now >= self.registry_outage.retry_at:
                    self._retry_registry()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + HEARTBEAT_INTERVAL_S
            self._final_flush()
            if not positions_in_kafka(self.sink):  # else the sink's transactions committed them
                for _ in range(SHUTDOWN_COMMIT_TRIES):  # no later flush will retry a failed commit
                    if commit_to_kafka(source.consumer, self.state):
                        break
                    time.sleep(0.5)
        except InstanceFenced as e:
            log.error("%s", e)
            fenced = True
        finally:
            # A recycled static member keeps its partitions for its replacement; a stopping one leaves.
            source.close(leave=not (self.recycle or fenced))
            self.sink.close()
        if fenced:  # nothing was flushed: the member that fenced this one owns the partitions now
            return EXIT_FENCED
        active_s = self.last_event_at - (self.first_event_at or self.last_event_at)
        rate = self.events / active_s if active_s else 0.0
        log.info("worker stopped: %d events in %.2f s from first to last, %.0f events/s", self.events, active_s, rate)
        return EXIT_RECYCLE if self.recycle else 0

    def process(self, messages: list[Any]) -> None:
        """The hot loop: every message of a batch, in offset order per partition.

        (``Any``: confluent-kafka types each Message accessor as optional, but a message
        without error has them all.) While a replay filter is active in some partition, the
        batch goes to :meth:`process_replay` instead: the normal path pays one check per batch.
        """
        if self.state.replaying:
            self.process_replay(messages)
            return
        parts = self.state.parts
        partials = self.state.partials
        decode, update = self.decode, self.update
        size = self.pipeline.window.size_ms
        closes_after = size + self.pipeline.window.grace_ms  # window end + grace, from its start
        timed = self.pipeline.window.time_field is not None  # record[0] is the event time
        one_topic = len(self.pipeline.kafka.topics) == 1
        by_partition = self.by_partition
        rejected_before = len(self.state.rejects)
        skipped = errors = unread = 0  # messages not aggregated (revoked, rejected, late); error events; left
        # A batch comes in runs of one partition: look the partition up when the run changes, and
        # move its position once, at the end of the run, to the offset after the run's last message.
        part: PartitionState | None = None
        run: tuple[str, int] | None = None
        last: Any = None  # the last message of the current run
        for msg in messages:
            if msg.error() is not None:
                if part is not None:  # end the run first: an end-of-partition event reads its position
                    part.next_offset = last.offset() + 1
                    part = run = None
                self._on_error(msg)
                errors += 1
                continue
            p = msg.partition()
            if run is None or p != run[1] or not (one_topic or msg.topic() == run[0]):
                if part is not None:
                    part.next_offset = last.offset() + 1
                run = (msg.topic(), p)
                part = parts.get(run)
            if part is None:
                skipped += 1
                continue  # revoked while in flight: its next owner reads it from the sink position
            last = msg
            try:
                record = decode(msg.value())
            except Exception as e:
                if isinstance(e, RegistryUnavailable):  # not the message's fault: read it again later
                    part.next_offset = msg.offset()
                    part = None
                    unread = self._registry_down(messages, msg, e)
                    break
                self._reject(part, msg, e)
                skipped += 1
                continue
            t = record[0] if timed else msg.timestamp()[1]
            ws = t - t % size
            if t > part.watermark:
                part.watermark = t
            elif ws + closes_after <= part.watermark:
                part.late_events += 1  # late: counted with the position, never aggregated
                skipped += 1
                continue
            if by_partition:  # the sink writes each partition's partials apart (sinks/__init__.py)
                ws = (ws, part.topic, part.partition)
            update(partials, ws, record)
        if part is not None:
            part.next_offset = last.offset() + 1
        self._processed(len(messages) - errors - unread, skipped, rejected_before)

    def process_replay(self, messages: list[Any]) -> None:
        """:meth:`process` with the replay filters (sinks.ReplayFilter) of the partitions that have
        one: below a partition's ``until`` offset, an event of a window starting before ``floor``
        moves the watermark and is judged late or not exactly as before, but is not aggregated
        (its window was kept and holds it already), and an undecodable message is only counted
        (its reject row and dead letter exist). Partitions without a filter have until = 0."""
        parts = self.state.parts
        partials = self.state.partials
        decode, update = self.decode, self.update
        size = self.pipeline.window.size_ms
        closes_after = size + self.pipeline.window.grace_ms
        timed = self.pipeline.window.time_field is not None  # record[0] is the event time
        rejected_before = len(self.state.rejects)
        skipped = errors = unread = 0
        for msg in messages:
            if msg.error() is not None:
                self._on_error(msg)
                errors += 1
                continue
            part = parts.get((msg.topic(), msg.partition()))
            if part is None:
                skipped += 1
                continue
            offset = msg.offset()
            seen = offset < part.replay_until  # read before the replay began
            try:
                record = decode(msg.value())
            except Exception as e:
                if isinstance(e, RegistryUnavailable):  # not the message's fault: read it again later
                    unread = self._registry_down(messages, msg, e)
                    break
                if seen:
                    part.invalid_events += 1
                    part.next_offset = offset + 1
                else:
                    self._reject(part, msg, e)
                skipped += 1
                continue
            t = record[0] if timed else msg.timestamp()[1]
            ws = t - t % size
            if t > part.watermark:
                part.watermark = t
            elif ws + closes_after <= part.watermark:
                part.late_events += 1
                part.next_offset = offset + 1
                skipped += 1
                continue
            part.next_offset = offset + 1
            if seen and ws < part.replay_floor:
                skipped += 1  # its window was kept by the replay and holds this event already
                continue
            update(partials, ws, record)
        self.state.check_replaying()
        self._processed(len(messages) - errors - unread, skipped, rejected_before)

    def _processed(self, messages: int, skipped: int, rejected_before: int) -> None:
        """Per batch: ``messages`` read (error events such as end-of-partition excluded)."""
        self.state.note_passed(self.pipeline.window.size_ms)
        self.batch_events = messages
        self.events += messages
        self.invalid_caps.check(messages, len(self.state.rejects) - rejected_before)
        metrics.EVENTS_CONSUMED.inc(messages)
        metrics.EVENTS_AGGREGATED.inc(messages - skipped)
        metrics.TRACKED_KEYS.set(len(self.state.partials))

    def at_end(self, tp: TopicPartition, offset: int) -> None:
        """The consumer has read everything it can deliver of a partition, up to ``offset``."""
        part = self.state.parts.get(tp)
        if part is not None:
            self.ended[tp] = part.next_offset

    def _backlog(self, messages: list[Any], interval_s: float) -> bool:
        """Whether the batch's last event was written more than a flush interval ago: the worker
        is behind (a restart, a replay, a burst), and its results are due once it catches up."""
        for msg in reversed(messages):
            if msg.error() is None:
                kind, ts = msg.timestamp()
                return bool(kind != TIMESTAMP_NOT_AVAILABLE and time.time() - ts / 1000 > interval_s)
        return False

    def _caught_up(self) -> bool:
        """Every owned partition has reached its end, with no message read since (from librdkafka's
        end-of-partition events: they also count the commit markers of transactional topics)."""
        parts = self.state.parts
        ended = self.ended
        return bool(parts) and all(tp in ended and ended[tp] == part.next_offset for tp, part in parts.items())

    def after_batch(self, messages: int) -> None:
        """Called once per turn of the loop with the batch size (0 when the poll timed out);
        the replay command uses it for its progress bar and its stop condition."""

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
                msg.headers(),
            )
        )
        part.invalid_events += 1
        part.next_offset = offset + 1
        metrics.EVENTS_INVALID.labels(part.topic, str(part.partition)).inc()
        log.warning(
            "undecodable message %s[%d]@%d goes to the dead letters: %r",
            part.topic,
            part.partition,
            offset,
            error,
        )
        self.invalid_caps.rejected(part.topic, part.partition, offset)

    def _on_error(self, msg: Any) -> None:
        error = msg.error()
        if error.code() == KafkaError._PARTITION_EOF:  # enable.partition.eof (source.py)
            self.at_end((msg.topic(), msg.partition()), msg.offset())
            return
        fatal = error.fatal() or error.code() == KafkaError._FATAL  # the consumer is of no more use
        if error.code() == KafkaError.FENCED_INSTANCE_ID or (fatal and "group.instance.id" in error.str()):
            raise InstanceFenced(
                f"this worker was fenced: another member of group {self.group} joined with its group.instance.id "
                f"{self.group_instance_id} ({error.str()})"
            )
        if fatal:
            raise KafkaException(error)
        log.error("consume error on %s[%s]: %s", msg.topic(), msg.partition(), error)

    def _heartbeat(self) -> None:
        """Tell the supervisor the loop is alive; leave gracefully past the memory limit."""
        if self.heartbeat_fd is not None:
            os.write(self.heartbeat_fd, HEARTBEAT)
        limit = self.pipeline.fleet.max_rss_bytes
        if limit and not self.recycle and _rss_bytes() > limit:
            log.warning("RSS %d MiB is past fleet.max_rss %d MiB: flushing and exiting to be replaced",
                        _rss_bytes() >> 20, limit >> 20)  # fmt: skip
            self.recycle = self.stopping = True

    def _on_stats(self, stats_json: str) -> None:
        """Consumer lag per owned partition, from librdkafka's statistics (the broker's high
        watermark minus the committed offset)."""
        stats = json.loads(stats_json)
        for topic, t in stats.get("topics", {}).items():
            for p, info in t.get("partitions", {}).items():
                lag = info.get("consumer_lag_stored", -1)  # offsets stored by a sink that commits them itself
                if lag < 0:
                    lag = info.get("consumer_lag", -1)
                if lag >= 0 and (topic, int(p)) in self.state.parts:
                    metrics.CONSUMER_LAG.labels(topic, p).set(lag)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after a final flush", signal.Signals(signum).name)
        self.stopping = True

    # -- flush and rebalances ---------------------------------------------------------------

    def _flush_or_pause(self, interval_s: float) -> float:
        """Flush; while the sink fails, pause every partition (memory stays bounded, polling goes
        on so the group keeps us) and retry with backoff. Returns the seconds to the next try."""
        try:
            self._place()  # partitions rewound while the sink could not be read: to its positions first
            self._flush()
            if self.unplaced:  # the flush hit a conflict, then could not read the positions back
                raise SinkError("the sink's positions could not be read after a rolled-back flush")
        except SinkError as e:
            now = time.monotonic()
            since = self._sink_down()
            self.outage_attempts += 1
            delay = backoff_s(self.outage_attempts, initial_s=0.5, max_s=SINK_RETRY_MAX_S)
            metrics.SINK_RETRIES.inc()
            metrics.SINK_OUTAGE_SECONDS.set(now - since)
            log.warning("sink write failed for %.1f s (%s): partitions paused, retry %d in %.1f s",
                        now - since, e, self.outage_attempts, delay)  # fmt: skip
            return delay
        if self.outage_since is not None:
            self._resume("sink")
            log.warning("sink back after %.1f s: partitions resumed", time.monotonic() - self.outage_since)
            self.outage_since, self.outage_attempts = None, 0
            metrics.SINK_OUTAGE_SECONDS.set(0)
        return interval_s

    def _sink_down(self) -> float:
        """Enter (or stay in) a sink outage: every partition paused until a flush goes through.
        Returns when the outage began (monotonic)."""
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self._pause("sink")
        return self.outage_since

    def _pause(self, reason: str) -> None:
        """Pause every assigned partition (polling goes on, so the group keeps this worker)."""
        assert self.source is not None
        consumer = self.source.consumer
        if not self.paused_for:
            consumer.pause(consumer.assignment())
            metrics.PAUSED_PARTITIONS.set(len(consumer.assignment()))
        self.paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        """Resume the partitions once nothing else keeps them paused."""
        assert self.source is not None
        consumer = self.source.consumer
        self.paused_for.discard(reason)
        if not self.paused_for:
            consumer.resume(consumer.assignment())
            metrics.PAUSED_PARTITIONS.set(0)

    def _registry_down(self, messages: list[Any], msg: Any, error: RegistryUnavailable) -> int:
        """The registry could not give ``msg``'s writer schema. The message and the rest of the
        batch are not the messages' fault: each partition in the rest is sought back to its first
        unread message, every partition is paused, and the schema is asked for again with backoff
        (:meth:`_retry_registry`). Returns how many messages were left unread."""
        assert self.source is not None
        rest = messages[messages.index(msg) :]
        firsts: dict[TopicPartition, int] = {}
        for m in rest:
            if m.error() is None:
                firsts.setdefault((m.topic(), m.partition()), m.offset())
        self._pause("registry")
        for (topic, partition), offset in firsts.items():
            if (topic, partition) in self.state.parts:
                self.source.consumer.seek(KafkaPartition(topic, partition, offset))
        now = time.monotonic()
        outage = self.registry_outage
        if outage is None:
            outage = self.registry_outage = RegistryOutage(since=now, value=msg.value())
            log.warning("schema registry unavailable (%s): partitions paused at %s[%d]@%d, retrying",
                        error, msg.topic(), msg.partition(), msg.offset())  # fmt: skip
        outage.value = msg.value()
        outage.attempts += 1
        outage.retry_at = now + backoff_s(outage.attempts, initial_s=0.5, max_s=REGISTRY_RETRY_MAX_S)
        metrics.REGISTRY_OUTAGE_SECONDS.set(now - outage.since)
        return len(rest)

    def _retry_registry(self) -> None:
        """Ask for the writer schema the paused partitions wait for; resume once the registry
        answers (a schema, or a "no such schema" that the message will be judged by)."""
        outage = self.registry_outage
        assert outage is not None and self.framed is not None
        try:
            self.framed.decode(outage.value)
        except RegistryUnavailable as e:
            now = time.monotonic()
            outage.attempts += 1
            outage.retry_at = now + backoff_s(outage.attempts, initial_s=0.5, max_s=REGISTRY_RETRY_MAX_S)
            metrics.REGISTRY_OUTAGE_SECONDS.set(now - outage.since)
            log.debug("schema registry still unavailable after %.1f s: %s", now - outage.since, e)
            return
        except Exception:  # the registry answered: the message is judged when it is read again
            pass
        self.registry_outage = None
        metrics.REGISTRY_OUTAGE_SECONDS.set(0)
        self._resume("registry")
        log.warning("schema registry back after %.1f s: partitions resumed", time.monotonic() - outage.since)

    def _final_flush(self) -> None:
        """The shutdown flush, retried while the sink fails for up to SHUTDOWN_FLUSH_S; after
        that the worker exits with the error (its events are read again by the next owner)."""
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        attempt = 0
        while True:
            try:
                self._flush()
                return
            except SinkError:
                attempt += 1
                delay = backoff_s(attempt, initial_s=0.5, max_s=5.0)
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)

    def _flush(self) -> None:
        assert self.source is not None
        if self.framed is not None:  # the registry's figures (its modules do not import the metrics)
            requests = self.framed.registry.requests
            metrics.REGISTRY_REQUESTS.inc(requests - self.registry_requests)
            self.registry_requests = requests
            metrics.SCHEMAS_CACHED.set(len(self.framed.by_ref))
        late = {k: p.late_events - p.stored_late for k, p in self.state.parts.items() if p.late_events > p.stored_late}
        result = flush(self.source.consumer, self.sink, self.group, self.state, self.dead_letters)
        self.behind = False
        if result.conflict is not None:
            self._rewind(list(self.state.parts))
            return
        for (topic, partition), n in late.items():  # now durable with the positions
            metrics.EVENTS_LATE.labels(topic, str(partition)).inc(n)
            log.info("%d late events in %s[%d] not aggregated (counted)", n, topic, partition)

    def _on_assign(self, partitions: list[KafkaPartition]) -> None:
        """Resume each new partition from the position and watermark the sink holds. While the
        sink cannot be read, the partitions are taken paused and placed once it answers."""
        assert self.source is not None
        consumer = self.source.consumer
        keys = [(p.topic, p.partition) for p in partitions]
        try:
            stored = self.sink.read_positions(self.group, keys)
        except SinkError as e:
            consumer.incremental_assign(partitions)  # where it starts does not matter: paused, then sought
            self.unplaced.update(keys)
            if self.paused_for:
                consumer.pause(partitions)
            self._sink_down()
            log.warning("cannot read the positions of the new partitions (%s): paused until the sink answers", e)
            self._assigned()
            return
        for p, key in zip(partitions, keys, strict=True):
            position = stored.get(key)
            if position is None:  # a brand-new sink: the committed Kafka offset, else earliest
                self.state.parts[key] = PartitionState(*key)
            else:
                p.offset = position.next_offset
                self.state.parts[key] = PartitionState.from_position(position)
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's pause across a lost assignment: one paused during a
        # sink outage and assigned back after the outage ended would never be fetched again.
        # New partitions follow the worker's state: paused while something keeps the rest paused.
        if self.paused_for:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        if self.state.check_replaying():  # the filters came with the positions: continue the replay exactly
            replaying = [f"{p.topic}[{p.partition}] until offset {p.replay_until}" for p in self.state.parts.values()
                         if p.replaying]  # fmt: skip
            log.info("an unfinished replay continues in %s", ", ".join(replaying))
        self._assigned()

    def _assigned(self) -> None:
        assert self.source is not None
        metrics.ASSIGNED_PARTITIONS.set(len(self.state.parts) + len(self.unplaced))
        if self.paused_for:
            metrics.PAUSED_PARTITIONS.set(len(self.source.consumer.assignment()))
        if self.heartbeat_fd is not None:
            os.write(self.heartbeat_fd, JOINED)

    def _on_revoke(self, partitions: list[KafkaPartition]) -> None:
        """Flush everything before the partitions go, so the next owner starts where we ended.

        When the sink cannot be written, the revoked partitions' partials must not reach it once
        they are gone (their next owner reads those events again from the sink's positions), and
        partials are merged across partitions: all are dropped and the partitions kept are rewound
        to the sink's positions (docs/design.md, "Rebalances"). The worker stays in the group."""
        try:
            self._flush()
        except SinkError as e:
            self._forget(partitions)
            self._sink_down()  # paused before the rewind seeks them
            log.warning("cannot flush before handing over %d partitions (%s): dropping every unflushed partial "
                        "and rewinding the %d partitions kept", len(partitions), e, len(self.state.parts))  # fmt: skip
            self._rewind(list(self.state.parts))
            return
        self._forget(partitions)

    def _on_lost(self, partitions: list[KafkaPartition]) -> None:
        """Lost partitions are never flushed: their new owner re-reads from the sink position.
        Partials are merged across partitions, so all are dropped and the rest rewound."""
        self._forget(partitions)
        self._rewind(list(self.state.parts))

    def _forget(self, partitions: list[KafkaPartition]) -> None:
        for p in partitions:
            self.state.parts.pop((p.topic, p.partition), None)
            self.unplaced.discard((p.topic, p.partition))
            self.ended.pop((p.topic, p.partition), None)
            with contextlib.suppress(KeyError):  # no lag reported for it yet
                metrics.CONSUMER_LAG.remove(p.topic, str(p.partition))
        self.state.check_replaying()
        metrics.ASSIGNED_PARTITIONS.set(len(self.state.parts) + len(self.unplaced))

    def _rewind(self, keys: list[TopicPartition]) -> None:
        """Drop all unflushed work and seek these partitions back to the sink's positions.

        The positions in memory are past the dropped partials, so no flush may write them: the
        partitions leave ``state.parts`` until they are placed again. While the sink cannot be
        read they stay out, paused, and :meth:`_place` is retried with the flushes."""
        self.state.clear()
        for key in keys:  # its end events were about the old position
            self.ended.pop(key, None)
            self.state.parts.pop(key, None)
        self.unplaced.update(keys)
        try:
            self._place()
        except SinkError as e:
            self._sink_down()
            log.warning("cannot read the sink's positions to rewind %d partitions (%s): paused until it answers",
                        len(self.unplaced), e)  # fmt: skip

    def _place(self) -> None:
        """Seek the partitions waiting for a rewind to the sink's positions and take them back
        into ``state.parts``; raises SinkError (and changes nothing) while the sink cannot be read."""
        if not self.unplaced:
            return
        assert self.source is not None
        consumer = self.source.consumer
        keys = sorted(self.unplaced)
        stored = self.sink.read_positions(self.group, keys)
        for key in keys:
            position = stored.get(key)
            if position is None:  # never flushed: back to where a brand-new sink starts
                self.state.parts[key] = PartitionState(*key)
                committed = consumer.committed([KafkaPartition(*key)], timeout=10)[0]
                offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
            else:
                self.state.parts[key] = PartitionState.from_position(position)
                offset = position.next_offset
            consumer.seek(KafkaPartition(key[0], key[1], offset))
        self.unplaced.clear()
        self.state.check_replaying()
        log.warning("rewound %d partitions to the sink's positions", len(keys))


@dataclass
class RegistryOutage:
    """The schema registry failed to give a writer schema: since when, and a value to retry with."""

    since: float
    value: bytes
    attempts: int = 0
    retry_at: float = 0.0


class InstanceFenced(EventfleetError):
    """Another live member uses this worker's group.instance.id: the broker fenced this one."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _die_with_parent() -> None:
    """Be killed (SIGKILL) when the supervisor dies: an instance killed is killed whole."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os._exit(1)


def run(
    pipeline: Pipeline, worker_id: int = 0, heartbeat_fd: int | None = None, group_instance_id: str | None = None
) -> int:
    return Worker(pipeline, worker_id, heartbeat_fd, group_instance_id).run()
