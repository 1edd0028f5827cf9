"""``eventfleet tail``: files -> Kafka, each complete line exactly once (docs/ingest.md).

The loop (:meth:`Tailer.run`): scan the globs, read the files' new complete lines, turn each into
a record (``lines``) or a dead letter, produce it inside the open Kafka transaction; every
``commit_interval``, commit (:meth:`Tailer.commit`):

1. produce each moved file's position (``positions``) into the same transaction;
2. commit the transaction: the records, the dead letters and the positions that cover them
   become visible to ``read_committed`` readers together, or not at all;
3. only then count the lines as produced and let finished files close.

A transaction that fails rewinds every file to its last committed position (the lines are read
again); one whose outcome is unknown first reads the positions back from Kafka. A restarted
tailer calls ``init_transactions`` with its stable ``transactional.id`` (which fences a zombie of
itself and aborts what it left open), reads its positions with ``read_committed``, and continues.
"""

import contextlib
import logging
import os
import signal
import time
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from .. import faults, metrics
from ..backoff import backoff_s
from ..config import IngestSettings, Pipeline
from ..dlq import InvalidCaps
from ..errors import EventfleetError
from ..sinks import kafka as sinks_kafka
from ..sinks.kafka import COMMIT_TRIES, READ_MARGIN_S, explain_transaction_error
from . import positions
from .files import Chunk, Files, Follower, Position, Truncated
from .lines import BadLine, Converter

log = logging.getLogger(__name__)

SCAN_INTERVAL_S = 0.5  # a new file is picked up within a second
IDLE_WAIT_S = 0.05  # nothing to read: serve the producer's callbacks this long, then look again
FOLLOWER_BUDGET_BYTES = 8 << 20  # read from one file per round before turning to the next
PROGRESS_INTERVAL_S = 10.0
FORGET_AFTER_MS = 7 * 24 * 3600 * 1000  # positions of files not seen for this long are dropped
QUEUE_WAIT_S = 0.05
HEALTHY_WITHIN_S = 60.0  # /healthz fails when the loop has not turned for this long
RETRY_MAX_S = 30.0
CLIENT_ERROR_EVERY_S = 10.0
FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class TailError(EventfleetError):
    """The tailer cannot go on (fenced by another instance, Kafka refusing transactions...)."""


class TransactionFailed(Exception):
    """A transaction did not commit; ``unknown``: it may have (the coordinator decides)."""

    def __init__(self, error: KafkaError, unknown: bool) -> None:
        super().__init__(str(error))
        self.error, self.unknown = error, unknown


# Throughput defaults of the tailer's producer, under [ingest.config]
PRODUCER_DEFAULTS = {
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.kbytes": 65536,  # bounded memory: reading waits when the queue is full
}


def producer_settings(pipeline: Pipeline, settings: IngestSettings) -> dict[str, Any]:
    """The kafka sink's transactional producer settings, with the tailer's defaults and [ingest.config]."""
    config = {**PRODUCER_DEFAULTS, **settings.config}
    out = sinks_kafka.producer_settings(pipeline, f"eventfleet-tail-{settings.id}", config)
    out["error_cb"] = _log_client_error
    return out


class Tailer:
    def __init__(self, pipeline: Pipeline) -> None:
        assert pipeline.ingest is not None
        self.pipeline = pipeline
        self.settings = s = pipeline.ingest
        self.topic = s.topic
        self.dlq_topic = (pipeline.dlq.topic or f"{s.topic}.dlq") if pipeline.dlq.enabled else None
        frame = None
        if pipeline.registry is not None:
            from ..produce import registered_frame

            frame = registered_frame(pipeline.registry, pipeline.registry.subject_for(s.topic), dict(pipeline.schema))
        self.converter = Converter(pipeline.schema, s.format, s.pattern, s.key, frame)
        self.caps = InvalidCaps(pipeline.dlq, "files")
        self.producer_settings = producer_settings(pipeline, s)
        self.timeout_s = float(self.producer_settings["transaction.timeout.ms"]) / 1000
        self.producer: Producer | None = None
        self.files: Files | None = None
        self.stopping = False
        self.ready = False
        self.last_turn = time.monotonic()
        self.in_transaction = False
        self.started_written = True  # False until the "started" marker is committed
        self.txn_started = 0.0
        self.txn_produced = self.txn_rejected = 0
        self.read_total = self.produced_total = self.rejected_total = self.empty_total = 0
        self.bytes_total = 0

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Tail until SIGTERM/SIGINT, then commit what was read and return 0."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        files = self._start()
        interval_s = self.settings.commit_interval_ms / 1000
        next_scan = next_progress = time.monotonic()
        try:
            while not self.stopping:
                now = self.last_turn = time.monotonic()
                if now >= next_scan:  # a new file is picked up within a second
                    files.scan()
                    next_scan = now + SCAN_INTERVAL_S
                try:
                    read = self.pump(now + interval_s)
                except (TransactionFailed, KafkaException) as e:
                    read = 0
                    self._failed(e if isinstance(e, TransactionFailed) else TransactionFailed(e.args[0], False))
                if not self.in_transaction or time.monotonic() - self.txn_started >= interval_s:
                    self.commit_or_rewind()
                    self._close_finished()
                if now >= next_progress:
                    self._progress()
                    next_progress = now + PROGRESS_INTERVAL_S
                if not read:
                    self._wait(IDLE_WAIT_S)
            self.commit_or_rewind(final=True)
            log.info("stopped: %d lines produced, %d rejected in total", self.produced_total, self.rejected_total)
            return 0
        finally:
            self.ready = False
            files.close()
            if self.producer is not None:
                with contextlib.suppress(KafkaException):
                    self.producer.flush(5)

    def _start(self) -> Files:
        """The topics, a transactional producer (fencing a zombie of this tailer), the committed
        positions, and the files under the globs matched against them."""
        s = self.settings
        positions.ensure_topics(AdminClient(self.pipeline.kafka.client_settings()), self.topic, s.positions_topic,
                                self.dlq_topic)  # fmt: skip
        self.producer = self._new_producer()
        known, started = self._load_positions()
        self.started_written = started
        self.files = files = Files(s.paths, known, start_at_end=s.start == "end" and not started,
                                   max_line_bytes=s.max_line_bytes, rotate_wait_s=s.rotate_wait_ms / 1000)  # fmt: skip
        files.scan()
        files.recover()
        self.ready = True
        log.info("tailing %s into %s as %s (%d files, %d positions known)", ", ".join(s.paths), self.topic, s.id,
                 len(files.followers), len(known))  # fmt: skip
        return files

    def _failed(self, e: "TransactionFailed") -> None:
        self._fatal(e.error)
        log.warning("producing failed (%s): rewinding the files to their committed positions", e)
        metrics.TAIL_TRANSACTIONS.labels("failed").inc()
        self._recover(e.unknown)

    def _close_finished(self) -> None:
        assert self.files is not None
        for f in self.files.close_finished():
            if f.metric_path:
                metrics.TAIL_BYTES_BEHIND.remove(f.metric_path)
        metrics.TAIL_FILES_OPEN.set(len(self.files.followers))

    def pump(self, deadline: float) -> int:
        """Read what the files hold now (up to a budget per file) and produce it; returns bytes read."""
        assert self.files is not None
        total = 0
        for f in self.files.reading_order():
            budget = FOLLOWER_BUDGET_BYTES
            while budget > 0:
                try:
                    chunk = f.read()
                except Truncated:
                    self.files.truncated(f)
                    continue
                except OSError as e:
                    log.warning("%s: read failed (%s): trying again later", f.path, e)
                    break
                if chunk is None:
                    break
                if chunk.lines:
                    self.produce(f, chunk)
                budget -= chunk.read
                total += chunk.read
            if f.metric_path != f.path:  # renamed: the gauge follows the file
                if f.metric_path:
                    metrics.TAIL_BYTES_BEHIND.remove(f.metric_path)
                f.metric_path = f.path
            metrics.TAIL_BYTES_BEHIND.labels(f.path).set(f.behind())
            if budget <= 0 and f.rotated:
                break  # the old file of a rotation first, to its end
            if time.monotonic() > deadline:
                break
        self.bytes_total += total
        return total

    def produce(self, f: Follower, chunk: Chunk) -> None:
        """Every line of the chunk as a record, or a dead letter, in the open transaction."""
        if not self.in_transaction:
            self._begin()
        assert self.producer is not None
        lines = chunk.lines
        produce, topic, convert = self.producer.produce, self.topic, self.converter.convert
        max_line = self.settings.max_line_bytes
        long_line = max(map(len, lines)) > max_line
        skipped = invalid = 0
        at_index, at_offset = 0, chunk.start  # the offset of line at_index (found only for bad lines)
        for i, line in enumerate(lines):
            try:
                if long_line and len(line) > max_line:
                    raise BadLine(f"longer than [ingest] max_line_bytes = {max_line} (its first bytes kept)")
                value, key = convert(line)
                produce(topic, value, key)
                continue
            except BadLine as e:
                error = str(e)
            except BufferError:
                self._wait_for_queue(topic, value, key)
                continue
            except KafkaException as e:
                if e.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                error = f"its record ({len(value)} bytes) is larger than the producer's message.max.bytes"
            while at_index < i:  # a bad line: its byte offset, for the dead letter's header
                at_offset += len(lines[at_index]) + 1
                at_index += 1
            skipped += 1
            invalid += self._reject(f, line[:max_line], at_offset, error, f.lines - len(lines) + i)
        read = len(lines)
        self.read_total += read
        metrics.TAIL_LINES_READ.inc(read)
        self.txn_produced += read - skipped
        self.txn_rejected += invalid
        self.caps.check(read, invalid)

    def _reject(self, f: Follower, line: bytes, offset: int, error: str, number: int) -> int:
        """A line that is not a record: skipped when empty (counted), else a dead letter in the
        transaction. Returns 1 for an invalid line, 0 for an empty one."""
        if not line.strip():
            self.empty_total += 1
            metrics.TAIL_LINES_EMPTY.inc()
            return 0
        self.caps.rejected_in(f.path, number, "line")
        if self.dlq_topic is None:
            log.warning("%s byte %d: %s (no dead-letter topic: [dlq] enabled = false)", f.path, offset, error)
            return 1
        headers: list[tuple[str, str | bytes | None]] = [
            ("eventfleet.source.file", f.path.encode()),
            ("eventfleet.source.offset", str(offset).encode()),
            ("eventfleet.error", error.encode()),
        ]
        assert self.producer is not None
        while True:
            try:
                self.producer.produce(self.dlq_topic, line, None, headers=headers)
                return 1
            except BufferError:
                self._wait(QUEUE_WAIT_S)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                raise TailError(f"{f.path} byte {offset}: a line of {len(line)} bytes is too large for the dead-letter "
                                "topic: lower [ingest] max_line_bytes below the producer's message.max.bytes, or raise "
                                "both") from None  # fmt: skip

    def _wait_for_queue(self, topic: str, value: bytes, key: bytes | None) -> None:
        """The producer's queue is full: reading waits for deliveries (memory stays bounded)."""
        assert self.producer is not None
        since = time.monotonic()
        while True:
            self.producer.poll(QUEUE_WAIT_S)
            if self.stopping and time.monotonic() - since > self.timeout_s:
                raise TailError("stopping, but Kafka has not taken the records read for "
                                f"{self.timeout_s:.0f} s: the lines after the committed positions are read again "
                                "at the next start")  # fmt: skip
            try:
                self.producer.produce(topic, value, key)
                return
            except BufferError:
                continue

    # -- transactions ---------------------------------------------------------------------------

    def _begin(self) -> None:
        assert self.producer is not None
        try:
            self.producer.begin_transaction()
        except KafkaException as e:
            self._fatal(e.args[0])
            raise TransactionFailed(e.args[0], unknown=False) from None
        self.in_transaction = True
        self.txn_started = time.monotonic()

    def commit_or_rewind(self, final: bool = False) -> None:
        """Commit; on failure rewind the files to their committed positions (retried with a
        backoff while Kafka refuses), or when ``final`` give up with an error."""
        attempt = 0
        while True:
            try:
                self.commit()
                return
            except TransactionFailed as e:
                attempt += 1
                metrics.TAIL_TRANSACTIONS.labels("failed").inc()
                log.warning("transaction failed (%s): rewinding the files to their committed positions", e)
                self._recover(e.unknown)
                if final:
                    raise TailError(f"the last transaction failed ({e}); the lines after the committed positions "
                                    "will be read again at the next start") from None  # fmt: skip
                if attempt >= COMMIT_TRIES:
                    return  # read again and retry at the next interval
                time.sleep(backoff_s(attempt, max_s=RETRY_MAX_S))

    def commit(self) -> None:
        """Steps 1-3 of the module's docstring. Does nothing when nothing moved."""
        assert self.files is not None and self.producer is not None
        files = self.files
        now_ms = int(time.time() * 1000)
        writes: list[tuple[bytes, bytes | None]] = []
        moved: list[Follower] = []
        tailer = self.settings.id
        for f in files.followers.values():
            if f.line_pos != f.committed or f.identity != f.committed_identity:
                writes.append((positions.record_key(tailer, f.identity),
                               positions.encode(tailer, Position(f.identity, f.path, f.line_pos, now_ms))))  # fmt: skip
                if f.committed_identity is not None and f.committed_identity != f.identity:
                    writes.append((positions.record_key(tailer, f.committed_identity), None))
                moved.append(f)
        retired = list(files.retired)
        for p in retired:
            writes.append((positions.record_key(tailer, p.identity), positions.encode(tailer, p)))
        following = {f.identity.key() for f in files.followers.values()}
        forgotten = [k for k, p in files.known.items()
                     if p.updated_ms and now_ms - p.updated_ms > FORGET_AFTER_MS and k not in following]  # fmt: skip
        writes += [(f"{tailer}/{k}".encode(), None) for k in forgotten]
        if not self.started_written:
            writes.append((positions.started_key(tailer), positions.encode_started(tailer)))
        if not writes and not self.in_transaction:
            return
        if not self.in_transaction:
            self._begin()
        producer = self.producer
        try:
            for key, value in writes:  # 1. the positions, in the same transaction as the lines
                while True:
                    try:
                        producer.produce(self.settings.positions_topic, value, key)
                        break
                    except BufferError:
                        producer.poll(QUEUE_WAIT_S)
            faults.reach("in_tail_transaction")
            committing = time.monotonic()
            self._commit_transaction()  # 2.
            log.debug("committed %d lines and %d positions in %.0f ms", self.txn_produced + self.txn_rejected,
                      len(writes), (time.monotonic() - committing) * 1000)  # fmt: skip
        except KafkaException as e:
            error = e.args[0]
            self._fatal(error)
            self.in_transaction = False
            raise TransactionFailed(error, unknown=False) from None
        self.in_transaction = False
        # 3. committed: the new positions are the ones to rewind to, and known ones
        metrics.TAIL_TRANSACTIONS.labels("committed").inc()
        metrics.TAIL_LINES_PRODUCED.inc(self.txn_produced)
        metrics.TAIL_LINES_REJECTED.inc(self.txn_rejected)
        self.produced_total += self.txn_produced
        self.rejected_total += self.txn_rejected
        self.txn_produced = self.txn_rejected = 0
        self.started_written = True
        for f in moved:
            if f.committed_identity is not None and f.committed_identity != f.identity:
                files.known.pop(f.committed_identity.key(), None)
            f.committed, f.committed_identity = f.line_pos, f.identity
            files.known[f.identity.key()] = Position(f.identity, f.path, f.line_pos, now_ms)
        for p in retired:
            files.known[p.identity.key()] = Position(p.identity, p.path, p.offset, now_ms)
        del files.retired[: len(retired)]
        for p in retired:  # a truncated file's copy outside the globs holds its unread lines
            files.find(files.known[p.identity.key()])
        for k in forgotten:
            files.known.pop(k, None)

    def _commit_transaction(self) -> None:
        assert self.producer is not None
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                self.producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as e:
                error: KafkaError = e.args[0]
                self._fatal(error)
                if error.retriable() and not error.fatal() and attempt < COMMIT_TRIES:
                    log.warning("commit_transaction failed (%s), retrying", error)
                    continue
                self.in_transaction = False
                # abortable: it did not commit; otherwise the coordinator decides
                raise TransactionFailed(error, unknown=not error.txn_requires_abort()) from None

    def _recover(self, unknown: bool) -> None:
        """After a failed transaction: abort it (a new producer when that fails or the outcome is
        unknown: its init_transactions aborts whatever is still open), read the committed
        positions back when the outcome was unknown, and rewind every file to them."""
        assert self.files is not None
        self.in_transaction = False
        self.txn_produced = self.txn_rejected = 0
        self.files.retired.clear()
        aborted = False
        if not unknown and self.producer is not None:
            try:
                self.producer.abort_transaction(self.timeout_s)
                aborted = True
            except KafkaException as e:
                log.warning("abort_transaction failed (%s): starting a new producer", e.args[0])
        attempt = 0
        while True:  # Kafka may be down: retry until it answers (or the tailer is asked to stop)
            try:
                if not aborted:
                    self.producer = self._new_producer()
                    aborted = True
                if unknown:
                    known, _started = self._load_positions()
                break
            except (TailError, positions.PositionsError) as e:
                if self.stopping:
                    raise
                attempt += 1
                delay = backoff_s(attempt, max_s=RETRY_MAX_S)
                log.warning("%s; retrying in %.1f s", e, delay)
                time.sleep(delay)
        if unknown:
            self.files.known = known
            for f in self.files.followers.values():
                for identity in (f.committed_identity, f.identity):
                    pos = known.get(identity.key()) if identity is not None else None
                    if pos is not None:
                        f.committed, f.committed_identity = pos.offset, pos.identity
                        break
        for f in self.files.followers.values():
            f.rewind()

    def _new_producer(self) -> Producer:
        """A transactional producer, ready: init_transactions fences a zombie with our id and
        aborts what it left open."""
        if self.producer is not None:
            self.producer.flush(0)
        producer = Producer(self.producer_settings)
        try:
            producer.init_transactions(self.timeout_s + READ_MARGIN_S)
        except KafkaException as e:
            raise TailError(f"cannot start Kafka transactions: {explain_transaction_error(e.args[0])}") from None
        return producer

    def _load_positions(self) -> tuple[dict[str, Position], bool]:
        s = self.settings
        return positions.load(self.pipeline.kafka.client_settings(), s.positions_topic, s.id,
                              self.timeout_s + READ_MARGIN_S)  # fmt: skip

    def _fatal(self, error: KafkaError) -> None:
        if error.code() in FENCED or (error.fatal() and "fenced" in str(error).lower()):
            raise TailError(
                f"another eventfleet tail with [ingest] id = {self.settings.id!r} started and fenced this one "
                f"({error}): give each tailer its own id (the default is the host name and the config path)"
            )

    # -- signals, waiting, progress ---------------------------------------------------------------

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: committing what was read, then stopping", signal.Signals(signum).name)
        self.stopping = True

    def _wait(self, seconds: float) -> None:
        """Serve the producer's callbacks for ``seconds``; a fatal producer error found there
        (fenced: stop; anything else: a new producer, and rewind)."""
        if self.producer is None:
            time.sleep(seconds)
            return
        try:
            self.producer.poll(seconds)
        except KafkaException as e:
            self._failed(TransactionFailed(e.args[0], unknown=True))

    def _progress(self) -> None:
        assert self.files is not None
        followers = self.files.followers.values()
        behind = sum(f.behind() for f in followers)
        metrics.TAIL_FILES_OPEN.set(len(followers))
        log.info("%d lines read, %d produced, %d rejected, %d empty; %d files open, %d bytes behind",
                 self.read_total, self.produced_total, self.rejected_total, self.empty_total, len(followers),
                 behind)  # fmt: skip

    def healthy(self) -> tuple[bool, str]:
        late = time.monotonic() - self.last_turn
        return (late < HEALTHY_WITHIN_S, "ok" if late < HEALTHY_WITHIN_S else f"the loop is stuck for {late:.0f} s")

    def is_ready(self) -> tuple[bool, str]:
        return (self.ready, "ok" if self.ready else "reading the positions")


_client_errors: dict[int, float] = {}  # error code -> when last logged


def _log_client_error(error: KafkaError) -> None:
    """librdkafka's errors, each kind once per CLIENT_ERROR_EVERY_S (a broker outage repeats
    them for every connection attempt); the transactions say what they mean for the lines."""
    now = time.monotonic()
    if now - _client_errors.get(error.code(), -CLIENT_ERROR_EVERY_S) >= CLIENT_ERROR_EVERY_S:
        _client_errors[error.code()] = now
        log.warning("Kafka producer: %s", error)


def run(pipeline: Pipeline, metrics_port: int | None = None) -> int:
    """``eventfleet tail``: serve /metrics, /healthz, /readyz and tail until SIGTERM."""
    assert pipeline.ingest is not None
    tailer = Tailer(pipeline)
    port = pipeline.ingest.metrics_port if metrics_port is None else metrics_port
    server = None
    if port:
        from prometheus_client import REGISTRY

        from ..http import serve

        registry = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else REGISTRY
        fix = "Choose a free one with --metrics-port N or [ingest] metrics_port = N (0 turns it off)"
        server = serve(port, tailer.healthy, tailer.is_ready, fix=fix, registry=registry)
    try:
        return tailer.run()
    finally:
        if server is not None:
            server.shutdown()
