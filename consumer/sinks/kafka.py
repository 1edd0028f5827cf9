"""The kafka sink: the changed aggregates as Avro records on an output topic, exactly once.

Each flush is one Kafka transaction (docs/design.md, "The flush protocol", step 2): every
partition's partials since its previous flush are produced to the output topic as *deltas*, and
the consumed offsets are sent to the same transaction (``send_offsets_to_transaction``, KIP-447),
each carrying the rest of the partition's position (watermark, late and invalid counts) in its
offset metadata. The
records and the offsets that cover them become visible together or not at all, so a
``read_committed`` consumer of the output topic sees every event's contribution exactly once.

Positions: the group's committed offsets are this sink's position rows. Their metadata also
holds a fingerprint of the pipeline and output topic: a group cannot resume into a topic that
another pipeline wrote, nor resume from offsets that something else committed.

Fencing (the compare-and-set of docs/design.md, "The flush protocol", step 2): the offsets carry
the consumer's group metadata (member id and generation). The group coordinator refuses them from a member that left the
group or is a generation behind (a worker that stalled past its session or poll interval), the
transaction is aborted and the worker discards its partials and rewinds, exactly as after a
failed compare-and-set. A transaction that had sent its offsets before the member lost its
partitions is settled before anyone reads those offsets: the new owner's offset fetch waits
for it (``require_stable``), so it either sees the offsets and the records, or neither.

The ``transactional.id`` is unique per worker process. Under KIP-447 zombies are fenced by the
group generation, not by the transactional id, so no stable id per partition or per worker is
needed, and two instances can never fence each other by sharing one. The price: a transaction
left open by a crashed process is aborted by its coordinator only after
``transaction.timeout.ms``; until then the new owner of its partitions waits on assignment and
read_committed consumers wait at the open transaction (:data:`TRANSACTION_TIMEOUT_MS`).

Downstream, a key (window start and group-by values) is combined over all its records: add
the counts and sums, take the min of the mins and the max of the maxes, union / merge the
DataSketches sketches of ``NAME_sketch`` and read their estimates (:meth:`KafkaSink.results`).
"""

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from .. import faults
from ..aggregate import (
    SKETCH_KINDS,
    Metric,
    Partial,
    State,
    estimate_columns,
    estimates,
    merge,
    sketch_column,
    sketch_from_bytes,
    stored_values,
)
from ..config import MANAGED_PRODUCER_KEYS, Pipeline, SinkSettings, _string
from ..decode import make_decoder, make_encoder
from ..errors import ConfigError, EventfleetError, PositionConflict, SinkError
from ..registry import RegistryUnavailable, connect, header_size
from ..types import Position, PositionWrite, Reject, TopicPartition
from .base import Sink, SinkType
from .sql import pipeline_signature

log = logging.getLogger(__name__)

# Default transaction.timeout.ms: a flush's transaction must end within it, and a transaction
# left open by a crashed worker blocks its partitions' next owner for up to this long.
TRANSACTION_TIMEOUT_MS = 30_000
METADATA_TIMEOUT_S = 15.0
# Committed offsets are read within the transaction timeout plus this: the coordinator aborts a
# timed-out transaction at its next check (transaction.abort.timed.out.transaction.cleanup.interval.ms,
# 10 s by default), and only then are its offsets readable.
READ_MARGIN_S = 20.0
SEND_OFFSETS_MARGIN_S = 5.0  # beyond the transaction timeout, send_offsets_to_transaction is stuck
COMMIT_TRIES = 3  # commit_transaction is retried this often on a retriable error
CHECK_TIMEOUT_S = 10.0  # check-config's init_transactions
RESULTS_IDLE_TIMEOUT_S = 60.0  # results: give up when no partition reaches its end for this long
# Offset-commit errors that mean "not a current member of the group": fenced.
FENCED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
}
METADATA_VERSION = 1
_CGM_MAGIC = b"CGMDv2:"  # librdkafka's serialized consumer group metadata


class TransactionOutcomeUnknown(PositionConflict):
    """A commit failed in a way that leaves its outcome to the coordinator: the worker must
    not retry its partials (they may be committed) but rewind to the committed offsets, which
    the coordinator settles before anyone can read them."""

    def __init__(self, partitions: list[TopicPartition], error: KafkaError) -> None:
        super().__init__(partitions)
        self.args = (f"the transaction's outcome is unknown ({error}); rewinding to the committed offsets",)


# -- the output schema ---------------------------------------------------------------------


def key_schema(pipeline: Pipeline) -> dict[str, Any]:
    """The Avro record of a message key: window start and the group-by values."""
    return {
        "type": "record",
        "name": "WindowKey",
        "namespace": "eventfleet",
        "fields": [_window_field("window_start", "start"), *_group_fields(pipeline)],
    }


def output_schema(pipeline: Pipeline) -> dict[str, Any]:
    """The Avro record of a message value: one partition's partial aggregate of one key since
    that partition's previous flush (a delta), derived from the pipeline."""
    metrics: list[dict[str, Any]] = []
    for m in pipeline.aggregate.metrics:
        if m.kind in SKETCH_KINDS:
            metrics += _sketch_fields(m)
            continue
        if m.kind == "count":
            kind, doc = "long", "events counted (add deltas)"
        else:
            kind = "long" if pipeline.field_types[m.field or ""] in ("int", "long") else "double"
            doc = f"{m.kind} of {m.field} ({'add deltas' if m.kind == 'sum' else f'{m.kind} over deltas'})"
        metrics.append({"name": m.name, "type": kind, "doc": doc})
    return {
        "type": "record",
        "name": "WindowDelta",
        "namespace": "eventfleet",
        "doc": f"eventfleet partial aggregates, pipeline {pipeline_signature(pipeline)}",
        "fields": [
            _window_field("window_start", "start"),
            _window_field("window_end", "end (exclusive)"),
            *_group_fields(pipeline),
            *metrics,
            {"name": "source_topic", "type": "string", "doc": "the input topic of these events"},
            {"name": "source_partition", "type": "int", "doc": "the input partition of these events"},
        ],
    }


def _sketch_fields(m: Metric) -> list[dict[str, Any]]:
    """A sketch metric's fields: the estimates of this delta alone (not to be added up), then the
    sketch to merge downstream (docs/sinks.md, "Combining the deltas")."""
    if m.kind == "distinct":
        fields: list[dict[str, Any]] = [
            {"name": m.name, "type": "long", "doc": f"distinct {m.field} in this delta (estimate; merge the sketches)"}
        ]
        what = f"DataSketches HLL sketch of {m.field} (lg_k {m.lg_k}, HLL_8), compact: union the deltas'"
    else:
        fields = [
            {"name": c, "type": "double", "doc": f"quantile {q} of {m.field} in this delta (merge the sketches)"}
            for c, q in zip(estimate_columns(m), m.quantiles, strict=True)
        ]
        what = f"DataSketches KLL doubles sketch of {m.field} (k {m.k}): merge the deltas'"
    return [*fields, {"name": sketch_column(m), "type": "bytes", "doc": what}]


def _window_field(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": f"window {what}"}


def _group_fields(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The group-by fields with their input types (enums keep their name, namespace, symbols)."""
    types = {f["name"]: f["type"] for f in pipeline.schema["fields"]}
    namespace = pipeline.schema.get("namespace")
    out = []
    for g in pipeline.aggregate.group_by:
        t = types[g]
        if isinstance(t, dict) and t.get("type") == "enum":
            t = dict(t)
            if namespace and "." not in t["name"] and "namespace" not in t:
                t["namespace"] = namespace  # the same full name as in the input schema
        out.append({"name": g, "type": t})
    return out


def fingerprint(pipeline: Pipeline) -> str:
    """What a group's committed positions mean: the pipeline's computation and its output topic."""
    text = pipeline_signature(pipeline) + "\n" + pipeline.sink.topic
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- positions in the offset metadata ------------------------------------------------------


def encode_position(p: Position, pipeline_fingerprint: str) -> str:
    """The offset metadata of a position: everything but the offset itself."""
    return json.dumps(
        {
            "eventfleet": METADATA_VERSION,
            "pipeline": pipeline_fingerprint,
            "watermark": p.watermark,
            "late": p.late_events,
            "invalid": p.invalid_events,
        },
        separators=(",", ":"),
    )


class ForeignOffsets(EventfleetError):
    """The group's committed offsets were not written by this pipeline's kafka sink: resuming from
    them could not be exact. Not an outage (waiting would not fix it): the worker stops."""


def decode_position(tp: KafkaPartition, pipeline_fingerprint: str, group: str) -> Position:
    """The position a committed offset stands for; ForeignOffsets when this sink did not write it."""
    where = f"{tp.topic}[{tp.partition}]"
    try:
        meta = json.loads(tp.metadata or "")
        if not isinstance(meta, dict) or meta.get("eventfleet") != METADATA_VERSION:
            raise ValueError("not eventfleet metadata")
        if meta["pipeline"] != pipeline_fingerprint:
            raise ForeignOffsets(
                f"group {group!r} committed {where} up to offset {tp.offset} for another pipeline or output "
                f"topic (fingerprint {meta['pipeline']}, this pipeline's is {pipeline_fingerprint}): resuming "
                "would mix results. Use a new kafka.group_id (it rebuilds the output from the source topic), "
                "or the old pipeline"
            )
        return Position(tp.topic, tp.partition, tp.offset, int(meta["watermark"]), int(meta["late"]),
                        int(meta["invalid"]))  # fmt: skip
    except (ValueError, KeyError, TypeError):
        raise ForeignOffsets(
            f"group {group!r} has a committed offset for {where} ({tp.offset}) that the kafka sink did not write "
            f"(metadata {tp.metadata!r}): its watermark is unknown, so resuming could not be exact. Use a new "
            "kafka.group_id, or delete the group's offsets (kafka-consumer-groups.sh --delete-offsets)"
        ) from None


def group_membership(metadata: Any) -> tuple[int, str] | None:
    """(generation, member id) from librdkafka's serialized consumer group metadata, or None
    when the format is not the one known here."""
    if not isinstance(metadata, bytes) or not metadata.startswith(_CGM_MAGIC) or len(metadata) < 12:
        return None
    (generation,) = struct.unpack_from("=i", metadata, len(_CGM_MAGIC))
    fields = metadata[len(_CGM_MAGIC) + 4 :].split(b"\0")  # group id, member id, ...
    return generation, fields[1].decode() if len(fields) > 1 else ""


# -- the sink --------------------------------------------------------------------------------


def producer_settings(
    pipeline: Pipeline, transactional_id: str, config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """eventfleet's defaults, then [sink.config] (or ``config``: eventfleet tail's), then what the
    transactions depend on."""
    settings: dict[str, Any] = {
        **pipeline.kafka.client_settings(),
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        "linger.ms": 5,
        "partitioner": "murmur2_random",  # a key lands where Java clients would put it
    }
    settings.update(pipeline.sink.config if config is None else config)
    settings.update({"transactional.id": transactional_id, "enable.idempotence": True, "acks": "all"})
    return settings


def output_encoders(pipeline: Pipeline) -> tuple[Callable[[Any], bytes], Callable[[Any], bytes]]:
    """The key and value encoders of the output records: schemaless Avro, or, with ``[sink]
    registry = true``, framed with the ids of the output schemas, registered under
    ``<output topic>-key`` and ``<output topic>-value`` so consumers use their usual deserializers."""
    key, value = key_schema(pipeline), output_schema(pipeline)
    if not pipeline.sink.registry:
        return make_encoder(key), make_encoder(value)
    assert pipeline.registry is not None  # config.py checks it
    topic = pipeline.sink.topic
    registry = connect(pipeline.registry)
    try:
        key_ref = registry.register(f"{topic}-key", key)
        value_ref = registry.register(f"{topic}-value", value)
    except RegistryUnavailable as e:
        raise SinkError(f"cannot register the output schemas: {e}") from None
    finally:
        registry.close()
    body_key, body_value = make_encoder(key), make_encoder(value)
    frame = registry.frame
    return (lambda k: frame(key_ref, body_key(k))), (lambda v: frame(value_ref, body_value(v)))


def output_decoder(pipeline: Pipeline) -> Callable[[bytes], dict[str, Any]]:
    """Decode an output record's value (after its registry header, when framed)."""
    decode = make_decoder(output_schema(pipeline))
    if not pipeline.sink.registry:
        return decode
    assert pipeline.registry is not None
    start = header_size(pipeline.registry)
    return lambda value: decode(value[start:])


class TransactionAbandoned(SinkError):
    """A transaction call never returned: its producer was dropped, the transaction fenced by the next."""


class KafkaSink(Sink):
    positions_in_kafka = True  # flush step 3 is part of the transaction
    partials_by_partition = True  # each record names the partition its events came from

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.topic = pipeline.sink.topic
        self.group_by = pipeline.aggregate.group_by
        self.metrics = pipeline.aggregate.metrics
        self.sketched = any(m.kind in SKETCH_KINDS for m in self.metrics)
        self.value_columns = list(pipeline.column_types())[2 + len(self.group_by) :]  # the metrics' fields
        self.size = pipeline.window.size_ms
        self.fingerprint = fingerprint(pipeline)
        self.encode_key, self.encode_value = output_encoders(pipeline)
        host = socket.gethostname()
        self.transactional_id = f"eventfleet-{pipeline.kafka.group_id}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.settings = producer_settings(pipeline, self.transactional_id)
        self.timeout_s = float(self.settings["transaction.timeout.ms"]) / 1000
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    def use_consumer(self, consumer: Consumer) -> None:
        """The worker's consumer: its group metadata fences the transactions, and its
        committed offsets are the positions. Creates the output topic if missing."""
        self.consumer = consumer
        ensure_topic(self.pipeline, AdminClient(self.pipeline.kafka.client_settings()))
        self.producer = self._new_producer()
        log.info("kafka sink: writing %s with transactional.id %s", self.topic, self.transactional_id)

    def _new_producer(self) -> Producer:
        """A transactional producer, ready. init_transactions on our id also aborts whatever
        transaction an earlier producer of this process left open."""
        producer = Producer(self.settings)
        try:
            producer.init_transactions(self.timeout_s)
        except KafkaException as e:
            raise SinkError(f"cannot start Kafka transactions: {explain_transaction_error(e.args[0])}") from None
        return producer

    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        consumer = self._consumer()
        timeout = self.timeout_s + READ_MARGIN_S
        started = time.monotonic()
        try:
            committed = consumer.committed([KafkaPartition(t, p) for t, p in partitions], timeout=timeout)
            waited = time.monotonic() - started
            if waited > 1.0:  # a fetch takes milliseconds unless it waited for a transaction
                log.info("committed offsets read in %.1f s: a transaction had them pending", waited)
        except KafkaException as e:
            raise SinkError(
                f"cannot read the committed offsets of group {group!r} within {timeout:.0f} s ({e.args[0]}). A "
                "transaction left open by a crashed worker holds them until transaction.timeout.ms passes"
            ) from None
        out = {}
        for tp in committed:
            if tp.error is not None:
                raise SinkError(f"cannot read the committed offset of {tp.topic}[{tp.partition}]: {tp.error}")
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = decode_position(tp, self.fingerprint, group)
        return out

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        """One transaction: the deltas, then the offsets with their positions, then commit.
        ``rejects`` are already acknowledged by the dead-letter topic (flush step 2): the kafka
        sink keeps no copy."""
        consumer = self._consumer()
        moved = [(w.new.topic, w.new.partition) for w in positions]
        offsets = [
            KafkaPartition(w.new.topic, w.new.partition, w.new.next_offset, metadata=self._metadata(w.new))
            for w in positions
        ]
        membership = consumer.consumer_group_metadata()
        if not _current_member(membership, consumer):
            # A commit without a member id and generation is accepted unconditionally (the path
            # for clients outside group management): never send one. Our partitions are lost.
            raise PositionConflict(moved)
        producer = self.producer or self._new_producer()
        self.producer = producer
        try:
            producer.begin_transaction()
            self._produce(producer, partials)
            if producer.flush(self.timeout_s):
                raise SinkError(f"the output topic {self.topic} did not acknowledge within {self.timeout_s:.0f} s")
            # the compare-and-set: refused unless this consumer is a current member of the group
            self._send_offsets(producer, offsets, membership)
            faults.reach("in_sink_transaction")
        except KafkaException as e:
            self._abort(e.args[0], moved)
        except TransactionAbandoned:
            raise  # its producer is busy in the stuck call: not aborted here
        except BaseException:
            self._abort_quietly()
            raise
        self._commit(producer, moved)
        # the stored offset is what the lag metric compares with (librdkafka does not see
        # offsets committed by a producer); stored offsets are never committed (no auto-commit)
        with contextlib.suppress(KafkaException):
            consumer.store_offsets(offsets=[KafkaPartition(o.topic, o.partition, o.offset) for o in offsets])

    def _send_offsets(self, producer: Producer, offsets: list[KafkaPartition], membership: Any) -> None:
        """send_offsets_to_transaction, bounded. librdkafka can block in it past its timeout while
        the group coordinator moves (confluentinc/librdkafka#5456, #5511): the call then runs on
        in its thread, the producer is dropped, and a new one on the same transactional.id fences
        it, so the open transaction can never commit. The caller retries the same partials."""
        done: list[BaseException | None] = []

        def send() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, membership, self.timeout_s)
                done.append(None)
            except BaseException as e:  # handed to the calling thread
                done.append(e)

        thread = threading.Thread(target=send, name="send-offsets", daemon=True)
        thread.start()
        thread.join(self.timeout_s + SEND_OFFSETS_MARGIN_S)
        if not done:
            self.producer = None  # never touched again: the next write starts a new one, which fences it
            raise TransactionAbandoned(
                f"send_offsets_to_transaction did not return within {self.timeout_s + SEND_OFFSETS_MARGIN_S:.0f} "
                "s (the group coordinator moved?): transaction abandoned, a new producer fences it"
            )
        if done[0] is not None:
            raise done[0]

    def _metadata(self, position: Position) -> str:
        return encode_position(position, self.fingerprint)

    def _produce(self, producer: Producer, partials: State) -> None:
        topic, size, group_by, metrics = self.topic, self.size, self.group_by, self.metrics
        encode_key, encode_value, columns = self.encode_key, self.encode_value, self.value_columns
        for (window, *groups), values in partials.items():
            ws, source_topic, source_partition = window  # partials_by_partition: see the worker
            key = {"window_start": ws, **dict(zip(group_by, groups, strict=True))}
            stored = stored_values(metrics, values) if self.sketched else values  # sketches: estimates, bytes
            value = {**key, "window_end": ws + size, **dict(zip(columns, stored, strict=True)),
                     "source_topic": source_topic, "source_partition": source_partition}  # fmt: skip
            k, v = encode_key(key), encode_value(value)
            while True:
                try:
                    producer.produce(topic, v, k)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.05)

    def _commit(self, producer: Producer, moved: list[TopicPartition]) -> None:
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as e:
                error: KafkaError = e.args[0]
                if error.retriable() and not error.fatal() and attempt < COMMIT_TRIES:
                    log.warning("commit_transaction failed (%s), retrying", error)
                    continue
                if error.txn_requires_abort():
                    self._abort(error, moved)  # the commit did not happen
                # Fatal, or still failing: committed or not, the coordinator decides. A new
                # producer on our id aborts it if it is still open; either way the offsets the
                # worker rewinds to match the records.
                self.producer = None
                with contextlib.suppress(SinkError):
                    self.producer = self._new_producer()
                raise TransactionOutcomeUnknown(moved, error) from e

    def _abort(self, error: KafkaError, moved: list[TopicPartition]) -> NoReturn:
        """The transaction failed before its commit: abort it. Nothing was written, so the
        caller may retry the same partials (SinkError), unless the group fenced us."""
        if error.fatal():
            self._replace_producer()
        else:
            self._abort_quietly()
        if error.code() in FENCED:
            raise PositionConflict(moved)
        raise SinkError(f"Kafka transaction to {self.topic} aborted: {error}")

    def _abort_quietly(self) -> None:
        producer = self.producer
        if producer is None:
            return
        try:
            producer.abort_transaction(self.timeout_s)
        except KafkaException as e:
            log.warning("abort_transaction failed (%s): replacing the producer", e.args[0])
            self._replace_producer()

    def _replace_producer(self) -> None:
        """Drop a producer in a fatal or unknown state; the next write starts a new one."""
        self.producer = None
        try:
            self.producer = self._new_producer()
        except SinkError as e:
            log.warning("%s; retried at the next flush", e)

    def _consumer(self) -> Consumer:
        if self.consumer is None:
            raise SinkError("the kafka sink needs the worker's consumer (use_consumer) before reading or writing")
        return self.consumer

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every key's aggregate: the output topic read to its end with read_committed, the
        deltas combined by each metric's merge rule (the sketches merged, their estimates shown)."""
        totals: dict[tuple[Any, ...], Partial] = {}
        metrics = self.metrics
        for r in read_output(self.pipeline):
            key = (r["window_start"], *(r[g] for g in self.group_by))
            values = [
                sketch_from_bytes(m, r[sketch_column(m)]) if m.kind in SKETCH_KINDS else r[m.name] for m in metrics
            ]
            old = totals.get(key)
            totals[key] = values if old is None else merge(metrics, old, values)
        columns = ["window_start", "window_end", *self.group_by, *(c for m in metrics for c in estimate_columns(m))]
        rows = [
            (k[0], k[0] + self.size, *k[1:], *(e for m, v in zip(metrics, vs, strict=True) for e in estimates(m, v)))
            for k, vs in sorted(totals.items())
        ]
        return columns, rows

    def close(self) -> None:
        if self.producer is not None:
            self.producer.flush(5)
            self.producer = None


def _current_member(metadata: Any, consumer: Consumer) -> bool:
    member = consumer.memberid()
    parsed = group_membership(metadata)
    return bool(member) and (parsed is None or (parsed[0] >= 0 and parsed[1] == member))


def read_output(pipeline: Pipeline, isolation: str = "read_committed") -> list[dict[str, Any]]:
    """Every record of the output topic, decoded, from the start to the end (the last stable
    offset with read_committed: an open transaction's records are not included)."""
    topic = pipeline.sink.topic
    consumer = Consumer({
        **pipeline.kafka.client_settings(),
        "group.id": f"eventfleet-results-{uuid.uuid4().hex[:8]}",  # never commits: assign() only
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })  # fmt: skip
    decode = output_decoder(pipeline)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        except KafkaException as e:
            raise SinkError(f"cannot reach Kafka at {pipeline.kafka.bootstrap_servers}: {e.args[0]}") from None
        if meta is None or meta.error is not None:
            raise SinkError(f"the output topic {topic!r} does not exist yet: no worker has written to it")
        pending = set(meta.partitions)
        consumer.assign([KafkaPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        out = []
        idle_since = time.monotonic()
        while pending:
            messages = consumer.consume(1000, 1.0)
            for msg in messages:
                error = msg.error()
                if error is None:
                    out.append(decode(msg.value() or b""))
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise SinkError(f"reading the output topic {topic!r} failed: {error}")
            if messages:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > RESULTS_IDLE_TIMEOUT_S:
                raise SinkError(f"the output topic {topic!r}: partitions {sorted(pending)} never reached their end")
        return out
    finally:
        consumer.close()


# -- the output topic and check-config ---------------------------------------------------------


def ensure_topic(pipeline: Pipeline, admin: AdminClient, create: bool = True) -> str:
    """Check the output topic (create it when missing and ``create``); returns what was found.
    Refuses a compacted topic: compaction would keep only the last delta of each key."""
    topic = pipeline.sink.topic
    try:
        topics = admin.list_topics(timeout=METADATA_TIMEOUT_S).topics
    except KafkaException as e:
        raise SinkError(
            f"cannot reach Kafka at {pipeline.kafka.bootstrap_servers} within {METADATA_TIMEOUT_S:.0f} s "
            f"({e.args[0]}). Is the broker running and kafka.bootstrap_servers right?"
        ) from None
    meta = topics.get(topic)
    if meta is None or meta.error is not None:
        source = topics.get(pipeline.kafka.topics[0])
        partitions = len(source.partitions) if source is not None and source.error is None else 1
        if not create:
            return (
                f"output topic {topic} does not exist: the first worker creates it ({partitions} partitions, "
                f"retention.ms=-1), or create it yourself: kafka-topics.sh --create --topic {topic} "
                f"--partitions {partitions} --config retention.ms=-1 (never cleanup.policy=compact)"
            )
        new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config={"retention.ms": "-1"})
        try:
            admin.create_topics([new])[topic].result(30)
            log.info("created output topic %s (%d partitions, retention.ms=-1)", topic, partitions)
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise SinkError(f"output topic {topic!r} is missing and cannot be created ({e}); create it") from None
        return f"output topic {topic} created ({partitions} partitions)"
    policy = _cleanup_policy(admin, topic)
    if policy is not None and "compact" in policy:
        raise ConfigError(
            "sink.topic",
            f"topic {topic!r} has cleanup.policy={policy}: compaction keeps only the last delta of each key and "
            "loses the others",
            "use a topic with cleanup.policy=delete (and a retention long enough for your consumers)",
        )
    return f"output topic {topic} exists ({len(meta.partitions)} partitions, cleanup.policy={policy or '?'})"


def _cleanup_policy(admin: AdminClient, topic: str) -> str | None:
    try:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        configs = next(iter(futures.values())).result(METADATA_TIMEOUT_S)
    except Exception as e:  # not allowed to describe it: nothing to check
        log.warning("cannot read the configuration of %s: %s", topic, e)
        return None
    entry = configs.get("cleanup.policy")
    return str(entry.value) if entry is not None else None


def explain_transaction_error(error: KafkaError) -> str:
    """What a failed init_transactions means, and the fix."""
    code = error.code()
    if code == KafkaError.INVALID_TRANSACTION_TIMEOUT:
        return (
            f"{error}: [sink.config] transaction.timeout.ms is above the broker's transaction.max.timeout.ms; lower it"
        )
    if code in (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        return (
            f"{error}: the principal needs WRITE on transactional ids with the prefix 'eventfleet-' (and "
            "IDEMPOTENT_WRITE on the cluster, for brokers before 3.0)"
        )
    if code in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError.COORDINATOR_NOT_AVAILABLE):
        return (
            f"{error}: the transaction coordinator did not answer. Is the broker up? On a cluster with fewer "
            "than 3 brokers, set transaction.state.log.replication.factor and transaction.state.log.min.isr "
            "to at most the number of brokers"
        )
    return str(error)


def check(pipeline: Pipeline) -> list[str]:
    """check-config for the kafka sink: the broker answers, the output topic is usable (or
    will be created), transactions work; then the schemas a downstream consumer needs."""
    silent = logging.getLogger(f"{__name__}.check")  # librdkafka's own lines: the error raised below says it all
    silent.addHandler(logging.NullHandler())
    silent.propagate = False
    quiet: dict[str, Any] = {"logger": silent, "error_cb": lambda _error: None}
    admin = AdminClient({**pipeline.kafka.client_settings(), **quiet})
    lines = [ensure_topic(pipeline, admin, create=False)]
    settings = {**producer_settings(pipeline, f"eventfleet-check-{uuid.uuid4().hex[:8]}"), **quiet}
    producer = Producer(settings)
    try:
        producer.init_transactions(min(CHECK_TIMEOUT_S, float(settings["transaction.timeout.ms"]) / 1000))
    except KafkaException as e:
        raise SinkError(f"Kafka transactions do not work: {explain_transaction_error(e.args[0])}") from None
    lines.append(f"transactions work (transaction.timeout.ms={settings['transaction.timeout.ms']})")
    lines.append("message key (schemaless Avro): " + json.dumps(key_schema(pipeline)))
    lines.append("message value (schemaless Avro): " + json.dumps(output_schema(pipeline)))
    return lines


# -- the [sink] keys -----------------------------------------------------------------------------

FIELDS_ADDED = ("source_topic", "source_partition")  # to every output record


def parse_settings(t: Mapping[str, Any], base: Path) -> SinkSettings:
    """``[sink] type = "kafka"``: ``topic``, ``config`` (librdkafka producer settings, except those
    the transactions depend on) and ``registry``."""
    topic = _string(t, "sink.topic", "topic")
    extra = t.get("config", {})
    if not isinstance(extra, Mapping):
        raise ConfigError(
            "sink.config",
            "must be a table of librdkafka producer settings",
            'write [sink.config] then "key" = value lines',
        )
    for name, value in extra.items():
        if name in MANAGED_PRODUCER_KEYS:
            raise ConfigError(f"sink.config.{name}", "is managed by eventfleet", MANAGED_PRODUCER_KEYS[name])
        if not isinstance(value, str | int | float | bool):
            raise ConfigError(
                f"sink.config.{name}", f"must be a string, number or boolean, got {value!r}", "write a scalar value"
            )
    registry = t.get("registry", False)
    if not isinstance(registry, bool):
        raise ConfigError("sink.registry", f"must be true or false, got {registry!r}", "write registry = true")
    return SinkSettings("kafka", None, "", topic=topic, config=dict(extra), registry=registry)


def check_pipeline(pipeline: Pipeline) -> None:
    """What the kafka sink needs from the rest of the pipeline."""
    kafka, sink, aggregate, dlq = pipeline.kafka, pipeline.sink, pipeline.aggregate, pipeline.dlq
    dead_letters = {dlq.topic or f"{t}.dlq" for t in kafka.topics}
    if sink.topic in kafka.topics or sink.topic in dead_letters:
        raise ConfigError(
            "sink.topic", f"{sink.topic!r} is a source or dead-letter topic", "name a topic only the sink writes to"
        )
    if not dlq.enabled:
        raise ConfigError(
            "dlq.enabled",
            "the kafka sink keeps no rejects table, so undecodable messages need the dead-letter topic",
            "remove dlq.enabled = false (or use the sqlite sink)",
        )
    for name in aggregate.group_by:
        if name in FIELDS_ADDED:
            raise ConfigError(
                "aggregate.group_by",
                f"{name!r} clashes with a field the kafka sink adds to every record",
                "group by other fields, or use the sqlite sink",
            )
    for m in aggregate.metrics:
        if m.name in FIELDS_ADDED:
            raise ConfigError(
                f"aggregate.metrics.{m.name}", "clashes with a field the kafka sink adds to every record", "rename it"
            )
    if sink.registry and pipeline.registry is None:
        raise ConfigError(
            "sink.registry",
            "needs [schema] registry (where to register the output schemas)",
            'add registry = "URL" under [schema], or remove sink.registry',
        )


SINK = SinkType(
    keys=("type", "topic", "config", "registry"),
    parse=parse_settings,
    open=KafkaSink,
    check=check,
    check_pipeline=check_pipeline,
)
