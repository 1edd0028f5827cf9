"""The worker: one Kafka consumer in the group, the hot loop, and the rebalance handlers.

Follow an event: ``Source.consume`` hands a batch to :meth:`Worker.process`, which decodes it
(``decode``), places it in its window and checks lateness (``window``), folds it into the
partials (``aggregate``/``state``); every flush interval :func:`consumer.flush.flush` makes the
partials and positions durable, then commits the offsets to Kafka.

The worker is handed its Source, Sink, clock and metrics (:func:`run` builds the real ones), and
turns its loop one step at a time (:meth:`Worker.step`), so that tests drive it through
rebalances, outages and shutdown with an in-memory consumer and a clock they move by hand
(consumer/testing.py, tests/test_worker_driven.py).
"""

import contextlib
import ctypes
import faulthandler
import gc
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException

from . import faults, profiling, protocol, summary
from .aggregate import Fold, compile_fold, compile_updater
from .backoff import backoff_s
from .clock import SYSTEM_CLOCK, Clock
from .config import Pipeline
from .decode import FramedDecoder, Projection, make_projection
from .dlq import DeadLetters, InvalidCaps
from .errors import EventfleetError, SinkError
from .flush import commit_to_kafka, flush
from .metrics import WORKER, WorkerMetrics
from .protocol import EXIT_FENCED, EXIT_RECYCLE, HEARTBEAT, JOINED
from .registry import Registry, RegistryUnavailable, connect
from .sinks import Sink, open_sink
from .source import KafkaSource, Source
from .state import PartitionState, WorkerState
from .types import Reject, TopicPartition

log = logging.getLogger(__name__)

BATCH_MAX_MESSAGES = 10_000
POLL_TIMEOUT_S = 0.5
SHUTDOWN_COMMIT_TRIES = 5
HEARTBEAT_INTERVAL_S = 1.0
GC_YOUNG_THRESHOLD = 100_000  # see tune_gc
SINK_RETRY_MAX_S = 30.0  # backoff ceiling between flush attempts while the sink is down
SHUTDOWN_FLUSH_S = 20.0  # within the supervisor's default 30 s shutdown grace
REGISTRY_RETRY_MAX_S = 5.0  # backoff ceiling between tries while the schema registry is down


AfterBatch = Callable[["Worker", int], bool]
"""Called after each turn of the loop with the messages of its batch (0 when the poll timed
out); True stops the worker (then it flushes and leaves as on SIGTERM). ``eventfleet replay``
passes one that draws its progress bar and stops at the end offsets it captured."""


class Worker:
    """One member of the consumer group: the hot loop, the flushes, the rebalance handlers.

    Handed its ``source`` (the group's consumer), ``sink``, ``clock`` and ``metrics``; ``run``
    turns the loop until stopped, or a caller drives it with :meth:`start`, :meth:`step` and
    :meth:`finish`."""

    def __init__(
        self,
        pipeline: Pipeline,
        source: Source,
        sink: Sink,
        clock: Clock = SYSTEM_CLOCK,
        metrics: WorkerMetrics = WORKER,
        *,
        dead_letters: DeadLetters | None = None,
        registry: Registry | None = None,
        heartbeat_fd: int | None = None,
        group_instance_id: str | None = None,
        after_batch: AfterBatch | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.sink = sink
        self.clock = clock
        self.metrics = metrics
        self.dead_letters = dead_letters  # None: rejects are kept in the sink only (dlq disabled)
        self.group_instance_id = group_instance_id  # static membership: a supervisor slot's id (fleet.py)
        self.heartbeat_fd = heartbeat_fd  # a pipe to the supervisor (protocol.py), None when unsupervised
        self.after_batch = after_batch
        self.recycle = False
        self.fenced = False  # the broker fenced this member: exits EXIT_FENCED without a final flush
        self.group = pipeline.kafka.group_id
        self.interval_s = pipeline.flush_interval_ms / 1000
        # an event decodes to a tuple of the fields it needs, the time field first
        fields = pipeline.event_fields()
        self.framed: FramedDecoder | None = None  # values framed by a schema registry
        self.schemaless: Projection | None = None
        if pipeline.registry is not None:
            self.framed = FramedDecoder(dict(pipeline.schema), fields, registry or connect(pipeline.registry))
        else:
            self.schemaless = make_projection(dict(pipeline.schema), fields)
        self.update = compile_updater(pipeline.aggregate.group_by, pipeline.aggregate.metrics, fields)
        self.state = WorkerState()
        self.by_partition = self.sink.partials_by_partition
        self.folds: tuple[Fold, Fold] | None = None  # hopping windows: the fold, and its replay form
        self.late_unit = "(event, window) pairs" if pipeline.window.hopping else "events"  # what late counts count
        if pipeline.window.hopping:
            w, agg = pipeline.window, pipeline.aggregate
            args = (agg.group_by, agg.metrics, fields, w.size_ms, w.step_ms, w.grace_ms, self.by_partition)
            self.folds = (compile_fold(*args), compile_fold(*args, replay=True))
        self.stopping = False
        self.invalid_caps = InvalidCaps(pipeline.dlq)
        self.outage_since: float | None = None  # clock.monotonic() when the sink started failing
        self.outage_attempts = 0
        self.paused_for: set[str] = set()  # why every partition is paused: "sink", "registry"
        # Owned partitions rewound while the sink could not be read: out of state.parts (nothing of
        # theirs is aggregated, flushed or committed) and paused until the sink gives their positions.
        self.unplaced: set[TopicPartition] = set()
        self.registry_outage: RegistryOutage | None = None
        self.registry_requests = 0  # of them, already counted in the metrics
        self.events = 0
        self.batch_events = 0  # messages of the last batch, error events excluded
        self.first_event_at: float | None = None  # clock.monotonic() at the first and last batch
        self.last_event_at = 0.0
        self.next_flush = self.next_beat = 0.0  # clock.monotonic() deadlines, set by start()
        # Catching up: a backlog (an event older than the flush interval) read since the last
        # flush is flushed as soon as every owned partition has reached its end.
        self.behind = False
        self.ended: dict[TopicPartition, int | None] = {}  # partition -> its next_offset at its last end event
        self.end_offsets: dict[TopicPartition, int] = {}  # partition -> the offset its last end event gave

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
        """Consume until stopped (SIGTERM/SIGINT, the memory guard, ``after_batch``), then flush,
        commit and leave the group; returns the exit code (0, EXIT_RECYCLE or EXIT_FENCED)."""
        self.start()
        try:
            while not self.stopping:
                self.step()
        except BaseException:
            self._close()
            raise
        return self.finish()

    def start(self) -> None:
        """Join the group; the first flush is due one interval from now."""
        faults.reach("before_join")
        self.source.subscribe(self._on_assign, self._on_revoke, self._on_lost)
        log.info("worker started: group %s, topics %s", self.group, ", ".join(self.pipeline.kafka.topics))
        self.next_beat = self.clock.monotonic()
        self.next_flush = self.next_beat + self.interval_s

    def step(self) -> None:
        """One turn of the loop: a batch, then whatever is due (a flush, a registry retry, a heartbeat)."""
        clock = self.clock
        try:
            timeout = min(POLL_TIMEOUT_S, max(0.0, self.next_flush - clock.monotonic()))
            messages = self.source.consume(BATCH_MAX_MESSAGES, timeout)
            if messages:
                received, received_wall = clock.monotonic(), clock.time()
                self.process(messages)
                if self.batch_events:  # not only end-of-partition events
                    if self.first_event_at is None:
                        self.first_event_at = received
                        log.info("first message at %.3f", received_wall)
                    self.last_event_at = clock.monotonic()
                    self.behind = self.behind or self._backlog(messages)
        except InstanceFenced as e:
            log.error("%s", e)
            self.fenced = self.stopping = True
            return
        if self.after_batch is not None and self.after_batch(self, self.batch_events if messages else 0):
            self.stopping = True
        now = clock.monotonic()
        due = now >= self.next_flush
        if not due and self.behind and self.outage_since is None and self._caught_up():
            due = True
            log.info("caught up with the backlog: flushing now")
        if due:
            self.next_flush = clock.monotonic() + self._flush_or_pause()
        if self.registry_outage is not None and now >= self.registry_outage.retry_at:
            self._retry_registry()
        if now >= self.next_beat:
            self._heartbeat()
            self.next_beat = now + HEARTBEAT_INTERVAL_S

    def finish(self) -> int:
        """After the loop: the final flush and Kafka commit (none when fenced: the member that
        fenced this one owns the partitions now), then leave the group; returns the exit code."""
        try:
            if not self.fenced:
                self._final_flush()
                if not self.sink.positions_in_kafka:  # else the sink's transactions committed them
                    for _ in range(SHUTDOWN_COMMIT_TRIES):  # no later flush will retry a failed commit
                        if commit_to_kafka(self.source, self.state, self.metrics):
                            break
                        self.clock.sleep(0.5)
        finally:
            self._close()
        if self.fenced:
            return EXIT_FENCED
        active_s = self.last_event_at - (self.first_event_at or self.last_event_at)
        rate = self.events / active_s if active_s else 0.0
        log.info("worker stopped: %d events in %.2f s from first to last, %.0f events/s", self.events, active_s, rate)
        return EXIT_RECYCLE if self.recycle else 0

    def _close(self) -> None:
        try:  # a recycled static member keeps its partitions for its replacement; a stopping one leaves
            self.source.close(leave=not (self.recycle or self.fenced))
        finally:
            self.sink.close()

    def process(self, messages: list[Any]) -> None:
        """The hot loop: every message of a batch, in offset order per partition.

        (``Any``: confluent-kafka types each Message accessor as optional, but a message
        without error has them all.) A partition with an unfinished replay (its
        :class:`~consumer.sinks.ReplayFilter`, in ``PartitionState.replay_until``/``replay_floor``)
        is filtered here too: below its ``until`` offset, an event of a window starting before
        ``floor`` moves the watermark and is judged late or not exactly as before, but is not
        aggregated (its window was kept and holds it already), and an undecodable message is only
        counted (its reject row and dead letter exist). The other partitions pay one test of a
        local per aggregated event.

        Hopping windows go through the generated fold (:func:`consumer.aggregate.compile_fold`):
        each window of the event is judged late or not apart, and ``late_events`` counts the
        (event, window) pairs not aggregated. Tumbling pipelines keep the inlined rule below and
        pay one test of a local per event.
        """
        parts = self.state.parts
        partials = self.state.partials
        decode, update = self.decode, self.update
        size = self.pipeline.window.size_ms
        closes_after = size + self.pipeline.window.grace_ms  # window end + grace, from its start
        timed = self.pipeline.window.time_field is not None  # record[0] is the event time
        one_topic = len(self.pipeline.kafka.topics) == 1
        by_partition = self.by_partition
        folds = self.folds  # hopping windows (None: tumbling, one window per event, inlined below)
        step = self.pipeline.window.step_ms
        windows = size // step  # of each event
        rejected_before = len(self.state.rejects)
        skipped = errors = unread = 0  # messages not aggregated (revoked, rejected, late); error events; left
        # A batch comes in runs of one partition: look the partition up when the run changes, and
        # move its position once, at the end of the run, to the offset after the run's last message.
        part: PartitionState | None = None
        run: tuple[str, int] | None = None
        last: Any = None  # the last message of the current run
        until = 0  # the run's partition has an active replay filter below this offset (0: none)
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
                until = part.replay_until if part is not None and part.replaying else 0
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
                if until and msg.offset() < until:  # read before the replay: its reject and dead letter exist
                    part.invalid_events += 1
                else:
                    self._reject(part, msg, e)
                skipped += 1
                continue
            t = record[0] if timed else msg.timestamp()[1]
            if folds is not None:  # hopping: the fold judges and aggregates each window of t apart
                if t > part.watermark:
                    part.watermark = t
                if until and msg.offset() < until:  # windows before the replay's floor are not aggregated
                    late = folds[1](partials, t, record, part.watermark, run, part.replay_floor)
                    kept = t - t % step < part.replay_floor  # its newest window too: nothing aggregated
                else:
                    late = folds[0](partials, t, record, part.watermark, run)
                    kept = False
                part.late_events += late  # (event, window) pairs: counted with the position, never aggregated
                if kept or late == windows:
                    skipped += 1
                continue
            ws = t - t % size
            if t > part.watermark:
                part.watermark = t
            elif ws + closes_after <= part.watermark:
                part.late_events += 1  # late: counted with the position, never aggregated
                skipped += 1
                continue
            if until and ws < part.replay_floor and msg.offset() < until:
                skipped += 1  # its window was kept by the replay and holds this event already
                continue
            if by_partition:  # the sink writes each partition's partials apart (sinks/__init__.py)
                ws = (ws, part.topic, part.partition)
            update(partials, ws, record)
        if part is not None:
            part.next_offset = last.offset() + 1
        if self.state.replaying:
            self.state.check_replaying()
        self._processed(len(messages) - errors - unread, skipped, rejected_before)

    def _processed(self, messages: int, skipped: int, rejected_before: int) -> None:
        """Per batch: ``messages`` read (error events such as end-of-partition excluded)."""
        self.state.note_passed(self.pipeline.window.step_ms)
        self.batch_events = messages
        self.events += messages
        self.invalid_caps.check(messages, len(self.state.rejects) - rejected_before)
        self.metrics.events_consumed.inc(messages)
        self.metrics.events_aggregated.inc(messages - skipped)
        self.metrics.tracked_keys.set(len(self.state.partials))

    def at_end(self, tp: TopicPartition, offset: int) -> None:
        """The consumer has read everything it can deliver of a partition, up to ``offset`` (past
        the commit markers of a transactional topic, which no consumer receives)."""
        part = self.state.parts.get(tp)
        if part is not None:
            self.ended[tp] = part.next_offset
            self.end_offsets[tp] = offset

    def _backlog(self, messages: list[Any]) -> bool:
        """Whether the batch's last event was written more than a flush interval ago: the worker
        is behind (a restart, a replay, a burst), and its results are due once it catches up."""
        for msg in reversed(messages):
            if msg.error() is None:
                kind, ts = msg.timestamp()
                return bool(kind != TIMESTAMP_NOT_AVAILABLE and self.clock.time() - ts / 1000 > self.interval_s)
        return False

    def _caught_up(self) -> bool:
        """Every owned partition has reached its end, with no message read since (from librdkafka's
        end-of-partition events: they also count the commit markers of transactional topics)."""
        parts = self.state.parts
        ended = self.ended
        return bool(parts) and all(tp in ended and ended[tp] == part.next_offset for tp, part in parts.items())

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
        self.metrics.events_invalid.labels(part.topic, str(part.partition)).inc()
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
        protocol.send(self.heartbeat_fd, HEARTBEAT)
        limit = self.pipeline.fleet.max_rss_bytes
        if limit and not self.recycle and _rss_bytes() > limit:
            log.warning("RSS %d MiB is past fleet.max_rss %d MiB: flushing and exiting to be replaced",
                        _rss_bytes() >> 20, limit >> 20)  # fmt: skip
            self.recycle = self.stopping = True

    def on_stats(self, stats_json: str) -> None:
        """Consumer lag per owned partition, from librdkafka's statistics (the broker's high
        watermark minus the committed offset)."""
        stats = json.loads(stats_json)
        for topic, t in stats.get("topics", {}).items():
            for p, info in t.get("partitions", {}).items():
                lag = info.get("consumer_lag_stored", -1)  # offsets stored by a sink that commits them itself
                if lag < 0:
                    lag = info.get("consumer_lag", -1)
                if lag >= 0 and (topic, int(p)) in self.state.parts:
                    self.metrics.consumer_lag.labels(topic, p).set(lag)

    def stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        """Stop after this turn of the loop, with a final flush (the SIGTERM/SIGINT handler)."""
        log.info("received %s: stopping after a final flush", signal.Signals(signum).name)
        self.stopping = True

    # -- flush and rebalances ---------------------------------------------------------------

    def _flush_or_pause(self) -> float:
        """Flush; while the sink fails, pause every partition (memory stays bounded, polling goes
        on so the group keeps us) and retry with backoff. Returns the seconds to the next try."""
        try:
            self._place()  # partitions rewound while the sink could not be read: to its positions first
            self._flush()
            if self.unplaced:  # the flush hit a conflict, then could not read the positions back
                raise SinkError("the sink's positions could not be read after a rolled-back flush")
        except SinkError as e:
            now = self.clock.monotonic()
            since = self._sink_down()
            self.outage_attempts += 1
            delay = backoff_s(self.outage_attempts, initial_s=0.5, max_s=SINK_RETRY_MAX_S)
            self.metrics.sink_retries.inc()
            self.metrics.sink_outage_seconds.set(now - since)
            log.warning("sink write failed for %.1f s (%s): partitions paused, retry %d in %.1f s",
                        now - since, e, self.outage_attempts, delay)  # fmt: skip
            return delay
        if self.outage_since is not None:
            self._resume("sink")
            log.warning("sink back after %.1f s: partitions resumed", self.clock.monotonic() - self.outage_since)
            self.outage_since, self.outage_attempts = None, 0
            self.metrics.sink_outage_seconds.set(0)
        return self.interval_s

    def _sink_down(self) -> float:
        """Enter (or stay in) a sink outage: every partition paused until a flush goes through.
        Returns when the outage began (clock.monotonic())."""
        if self.outage_since is None:
            self.outage_since = self.clock.monotonic()
            self._pause("sink")
        return self.outage_since

    def _pause(self, reason: str) -> None:
        """Pause every assigned partition (polling goes on, so the group keeps this worker)."""
        if not self.paused_for:
            assigned = self.source.assignment()
            self.source.pause(assigned)
            self.metrics.paused_partitions.set(len(assigned))
        self.paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        """Resume the partitions once nothing else keeps them paused."""
        self.paused_for.discard(reason)
        if not self.paused_for:
            self.source.resume(self.source.assignment())
            self.metrics.paused_partitions.set(0)

    def _registry_down(self, messages: list[Any], msg: Any, error: RegistryUnavailable) -> int:
        """The registry could not give ``msg``'s writer schema. The message and the rest of the
        batch are not the messages' fault: each partition in the rest is sought back to its first
        unread message, every partition is paused, and the schema is asked for again with backoff
        (:meth:`_retry_registry`). Returns how many messages were left unread."""
        rest = messages[messages.index(msg) :]
        firsts: dict[TopicPartition, int] = {}
        for m in rest:
            if m.error() is None:
                firsts.setdefault((m.topic(), m.partition()), m.offset())
        self._pause("registry")
        for tp, offset in firsts.items():
            if tp in self.state.parts:
                self.source.seek(tp, offset)
        now = self.clock.monotonic()
        outage = self.registry_outage
        if outage is None:
            outage = self.registry_outage = RegistryOutage(since=now, value=msg.value())
            log.warning("schema registry unavailable (%s): partitions paused at %s[%d]@%d, retrying",
                        error, msg.topic(), msg.partition(), msg.offset())  # fmt: skip
        outage.value = msg.value()
        outage.attempts += 1
        outage.retry_at = now + backoff_s(outage.attempts, initial_s=0.5, max_s=REGISTRY_RETRY_MAX_S)
        self.metrics.registry_outage_seconds.set(now - outage.since)
        return len(rest)

    def _retry_registry(self) -> None:
        """Ask for the writer schema the paused partitions wait for; resume once the registry
        answers (a schema, or a "no such schema" that the message will be judged by)."""
        outage = self.registry_outage
        assert outage is not None and self.framed is not None
        try:
            self.framed.decode(outage.value)
        except RegistryUnavailable as e:
            now = self.clock.monotonic()
            outage.attempts += 1
            outage.retry_at = now + backoff_s(outage.attempts, initial_s=0.5, max_s=REGISTRY_RETRY_MAX_S)
            self.metrics.registry_outage_seconds.set(now - outage.since)
            log.debug("schema registry still unavailable after %.1f s: %s", now - outage.since, e)
            return
        except Exception:  # the registry answered: the message is judged when it is read again
            pass
        self.registry_outage = None
        self.metrics.registry_outage_seconds.set(0)
        self._resume("registry")
        log.warning("schema registry back after %.1f s: partitions resumed", self.clock.monotonic() - outage.since)

    def _final_flush(self) -> None:
        """The shutdown flush, retried while the sink fails for up to SHUTDOWN_FLUSH_S; after
        that the worker exits with the error (its events are read again by the next owner)."""
        deadline = self.clock.monotonic() + SHUTDOWN_FLUSH_S
        attempt = 0
        while True:
            try:
                self._flush()
                return
            except SinkError:
                attempt += 1
                delay = backoff_s(attempt, initial_s=0.5, max_s=5.0)
                if self.clock.monotonic() + delay > deadline:
                    raise
                self.clock.sleep(delay)

    def _flush(self) -> None:
        if self.framed is not None:  # the registry's figures (its modules do not import the metrics)
            requests = self.framed.registry.requests
            self.metrics.registry_requests.inc(requests - self.registry_requests)
            self.registry_requests = requests
            self.metrics.schemas_cached.set(len(self.framed.by_ref))
        late = {k: p.late_events - p.stored_late for k, p in self.state.parts.items() if p.late_events > p.stored_late}
        result = flush(self.source, self.sink, self.group, self.state, self.metrics, self.dead_letters)
        self.behind = False
        if result.conflict is not None:
            self._rewind(list(self.state.parts))
            return
        for (topic, partition), n in late.items():  # now durable with the positions
            self.metrics.events_late.labels(topic, str(partition)).inc(n)
            log.info("%d late %s in %s[%d] not aggregated (counted)", n, self.late_unit, topic, partition)

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Resume each new partition from the position and watermark the sink holds. While the
        sink cannot be read, the partitions are taken paused and placed once it answers."""
        self.metrics.rebalances.labels("assign").inc()
        try:
            stored = self.sink.read_positions(self.group, partitions)
        except SinkError as e:
            # where they start does not matter: paused, then sought
            self.source.assign(dict.fromkeys(partitions))
            self.unplaced.update(partitions)
            if self.paused_for:
                self.source.pause(partitions)
            self._sink_down()
            log.warning("cannot read the positions of the new partitions (%s): paused until the sink answers", e)
            self._assigned()
            return
        offsets: dict[TopicPartition, int | None] = {}
        for key in partitions:
            position = stored.get(key)
            if position is None:  # a brand-new sink: the committed Kafka offset, else earliest
                self.state.parts[key] = PartitionState(*key)
                offsets[key] = None
            else:
                self.state.parts[key] = PartitionState.from_position(position)
                offsets[key] = position.next_offset
        self.source.assign(offsets)
        # librdkafka keeps a partition's pause across a lost assignment: one paused during a
        # sink outage and assigned back after the outage ended would never be fetched again.
        # New partitions follow the worker's state: paused while something keeps the rest paused.
        if self.paused_for:
            self.source.pause(partitions)
        else:
            self.source.resume(partitions)
        if self.state.check_replaying():  # the filters came with the positions: continue the replay exactly
            replaying = [f"{p.topic}[{p.partition}] until offset {p.replay_until}" for p in self.state.parts.values()
                         if p.replaying]  # fmt: skip
            log.info("an unfinished replay continues in %s", ", ".join(replaying))
        self._assigned()

    def _assigned(self) -> None:
        self.metrics.assigned_partitions.set(len(self.state.parts) + len(self.unplaced))
        if self.paused_for:
            self.metrics.paused_partitions.set(len(self.source.assignment()))
        protocol.send(self.heartbeat_fd, JOINED)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Flush everything before the partitions go, so the next owner starts where we ended.

        When the sink cannot be written, the revoked partitions' partials must not reach it once
        they are gone (their next owner reads those events again from the sink's positions), and
        partials are merged across partitions: all are dropped and the partitions kept are rewound
        to the sink's positions (docs/design.md, "Rebalances"). The worker stays in the group."""
        self.metrics.rebalances.labels("revoke").inc()
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

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        """Lost partitions are never flushed: their new owner re-reads from the sink position.
        Partials are merged across partitions, so all are dropped and the rest rewound."""
        self.metrics.rebalances.labels("lost").inc()
        self._forget(partitions)
        self._rewind(list(self.state.parts))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for key in partitions:
            self.state.parts.pop(key, None)
            self.unplaced.discard(key)
            self.ended.pop(key, None)
            self.end_offsets.pop(key, None)
            with contextlib.suppress(KeyError):  # no lag reported for it yet
                self.metrics.consumer_lag.remove(key[0], str(key[1]))
        self.state.check_replaying()
        self.metrics.assigned_partitions.set(len(self.state.parts) + len(self.unplaced))

    def _rewind(self, keys: list[TopicPartition]) -> None:
        """Drop all unflushed work and seek these partitions back to the sink's positions.

        The positions in memory are past the dropped partials, so no flush may write them: the
        partitions leave ``state.parts`` until they are placed again. While the sink cannot be
        read they stay out, paused, and :meth:`_place` is retried with the flushes."""
        self.state.clear()
        for key in keys:  # its end events were about the old position
            self.ended.pop(key, None)
            self.end_offsets.pop(key, None)
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
        keys = sorted(self.unplaced)
        stored = self.sink.read_positions(self.group, keys)
        for key in keys:
            position = stored.get(key)
            if position is None:  # never flushed: back to where a brand-new sink starts
                self.state.parts[key] = PartitionState(*key)
                self.source.seek(key, None)
            else:
                self.state.parts[key] = PartitionState.from_position(position)
                self.source.seek(key, position.next_offset)
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


def build(
    pipeline: Pipeline,
    heartbeat_fd: int | None = None,
    group_instance_id: str | None = None,
    after_batch: AfterBatch | None = None,
) -> Worker:
    """A worker on the real Kafka consumer, sink and dead-letter topic of ``pipeline``."""
    sink = open_sink(pipeline)
    try:
        source = KafkaSource(pipeline, group_instance_id)
    except BaseException:
        sink.close()
        raise
    sink.use_consumer(source.consumer)  # a sink that commits the offsets in its own transactions
    try:
        dead_letters = DeadLetters(pipeline) if pipeline.dlq.enabled else None
    except BaseException:
        source.close(leave=False)
        sink.close()
        raise
    worker = Worker(
        pipeline,
        source,
        sink,
        dead_letters=dead_letters,
        heartbeat_fd=heartbeat_fd,
        group_instance_id=group_instance_id,
        after_batch=after_batch,
    )
    source.on_stats = worker.on_stats
    return worker


def run(
    pipeline: Pipeline, worker_id: int = 0, heartbeat_fd: int | None = None, group_instance_id: str | None = None
) -> int:
    """``eventfleet worker``: one worker process until SIGTERM/SIGINT; returns its exit code.
    (``worker_id``, the supervisor's slot, names the log lines, which the command sets up, and the summary.)"""
    if heartbeat_fd is not None:
        _die_with_parent()
    worker = build(pipeline, heartbeat_fd, group_instance_id)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, worker.stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack
    signal.signal(signal.SIGUSR2, profiling.start)  # kill -USR2: a sampling profile to a file
    tune_gc()
    code = worker.run()
    if code != protocol.EXIT_FENCED:  # $EVENTFLEET_SUMMARY_DIR: what the demo reads
        summary.worker_stopped(worker_id, worker.events, worker.first_event_at, worker.last_event_at)
    return code


def tune_gc() -> None:
    """The cyclic garbage collector: every batch allocates 10,000 Message objects, which with the
    default threshold (700) starts a young collection 14 times a batch, about 5% of the loop's
    time, for garbage that reference counting frees anyway. The start-up objects are frozen out
    of every later collection, and young collections wait for 100,000 objects that outlive their
    batch (new keys of the state)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)
