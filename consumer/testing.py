"""An in-memory Kafka and a clock moved by hand, to drive a worker deterministically.

:class:`LocalBroker` holds topics as lists of messages and each group's committed offsets;
:class:`LocalSource` is a consumer of it that implements the worker's
:class:`~consumer.source.Source` (the interface :class:`~consumer.source.KafkaSource` implements
on a real broker); :class:`MockedClock` is a :class:`~consumer.clock.Clock` that only moves when
told. The test plays the group coordinator: it says which partitions a source gets, gives up or
loses (:meth:`LocalSource.rebalance`), and when a member is fenced; the handlers run inside the
next ``consume``, as librdkafka runs them inside its poll. Messages are confluent-kafka's own
``Message`` objects, end-of-partition events included, so the hot loop reads what it reads in
production. (The idea is getsentry/arroyo's ``LocalBroker`` and ``MockedClock``.)
:class:`LocalRegistry` is a schema registry in memory that a test can take down.
"""

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, Message

from .clock import Clock
from .registry import (
    CONFLUENT_HEADER,
    CONFLUENT_MAGIC,
    Registry,
    RegistryUnavailable,
    UnknownSchema,
    parse_confluent_header,
)
from .source import Handler, RebalanceError, Source
from .types import TopicPartition

WALL_START_S = 1_800_000_000.0  # MockedClock's wall time at monotonic 0 (2027-01-15)


class MockedClock:
    """A :class:`~consumer.clock.Clock` that stands still until :meth:`advance` (or ``sleep``)."""

    def __init__(self, wall_start_s: float = WALL_START_S) -> None:
        self.now = 0.0
        self.wall_start_s = wall_start_s

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall_start_s + self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class LocalBroker:
    """Topics in memory (each partition a list of messages, its offsets the list's indexes) and
    the offsets each group committed."""

    def __init__(self, clock: MockedClock) -> None:
        self.clock = clock
        self.topics: dict[str, list[list[Message]]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}  # (group, partition) -> offset

    def create_topic(self, name: str, partitions: int) -> None:
        self.topics[name] = [[] for _ in range(partitions)]

    def produce(self, topic: str, partition: int, value: bytes, timestamp_ms: int | None = None) -> int:
        """Append a message (written now by the clock unless ``timestamp_ms``); returns its offset."""
        log = self.topics[topic][partition]
        ts = int(self.clock.time() * 1000) if timestamp_ms is None else timestamp_ms
        log.append(
            Message(
                topic=topic,
                partition=partition,
                offset=len(log),
                value=value,
                timestamp=(TIMESTAMP_CREATE_TIME, ts),
            )
        )
        return len(log) - 1

    def end(self, tp: TopicPartition) -> int:
        """The offset the next message of the partition will get (the high watermark)."""
        return len(self.topics[tp[0]][tp[1]])

    def ends(self, topic: str) -> dict[int, int]:
        return {p: len(log) for p, log in enumerate(self.topics[topic])}

    def group_offsets(self, group: str, topic: str) -> dict[int, int]:
        return {tp[1]: offset for (g, tp), offset in self.committed.items() if g == group and tp[0] == topic}


@dataclass
class _Rebalance:
    kind: str  # "assign", "revoke", "lost"
    partitions: list[TopicPartition]


@dataclass
class LocalSource:
    """One group member's consumer of a :class:`LocalBroker`: a :class:`~consumer.source.Source`.

    ``fetch_max``: at most this many messages of one partition per ``consume`` (None: all there
    are), so that a test can read a topic in several batches."""

    broker: LocalBroker
    group: str
    fetch_max: int | None = None
    positions: dict[TopicPartition, int] = field(default_factory=dict)  # the assignment, next offset of each
    paused: set[TopicPartition] = field(default_factory=set)
    fail_commits: bool = False  # every commit raises, as when the group coordinator cannot be reached
    subscribed: bool = False
    closed: bool = False
    left: bool = False  # closed after leaving the group (revoking its partitions)
    _handlers: dict[str, Handler] = field(default_factory=dict)
    _pending: list[_Rebalance] = field(default_factory=list)
    _eof_at: dict[TopicPartition, int] = field(default_factory=dict)  # the end-of-partition event sent last
    _fenced: bool = False
    _error: BaseException | None = None

    # -- what the test does, as the group coordinator ------------------------------------------

    def rebalance(
        self,
        assign: list[TopicPartition] | None = None,
        revoke: list[TopicPartition] | None = None,
        lost: list[TopicPartition] | None = None,
    ) -> None:
        """Queue a rebalance; its handlers run inside the next :meth:`consume`."""
        for kind, partitions in (("revoke", revoke), ("lost", lost), ("assign", assign)):
            if partitions:
                self._pending.append(_Rebalance(kind, sorted(partitions)))

    def fence(self) -> None:
        """The broker fenced this member (another one joined with its group.instance.id): the
        next :meth:`consume` returns the fatal error event librdkafka gives."""
        self._fenced = True

    # -- the Source interface ------------------------------------------------------------------

    def subscribe(self, on_assign: Handler, on_revoke: Handler, on_lost: Handler) -> None:
        self._handlers = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self.subscribed = True

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        assert self.subscribed and not self.closed
        while self._pending:
            self._serve(self._pending.pop(0))
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error
        if self._fenced:
            fenced = KafkaError(KafkaError.FENCED_INSTANCE_ID, "Fatal error: broker: static consumer fenced by "
                                "other consumer with same group.instance.id", fatal=True)  # fmt: skip
            return [Message(error=fenced)]
        out: list[Message] = []
        for tp in sorted(self.positions):
            if tp in self.paused:
                continue
            log = self.broker.topics[tp[0]][tp[1]]
            start = self.positions[tp]
            room = max_messages - len(out)
            if self.fetch_max is not None:
                room = min(room, self.fetch_max)
            batch = log[start : start + max(0, room)]
            out.extend(batch)
            self.positions[tp] = position = start + len(batch)
            if position == len(log) and self._eof_at.get(tp) != position and len(out) < max_messages:
                self._eof_at[tp] = position  # enable.partition.eof: once per arrival at the end
                out.append(Message(topic=tp[0], partition=tp[1], offset=position,
                                   error=KafkaError(KafkaError._PARTITION_EOF)))  # fmt: skip
            if len(out) >= max_messages:
                break
        return out

    def _serve(self, rebalance: _Rebalance) -> None:
        try:
            self._handlers[rebalance.kind](list(rebalance.partitions))
        except BaseException as e:  # as KafkaSource: raised from consume, never swallowed
            if self._error is None:
                self._error = e
        if rebalance.kind != "assign":  # the client unassigns what the handler gave up
            for tp in rebalance.partitions:
                self.positions.pop(tp, None)
                self.paused.discard(tp)
                self._eof_at.pop(tp, None)

    def assign(self, offsets: dict[TopicPartition, int | None]) -> None:
        for tp, offset in offsets.items():
            self.positions[tp] = self._committed_or_earliest(tp) if offset is None else offset
            self._eof_at.pop(tp, None)

    def assignment(self) -> list[TopicPartition]:
        return sorted(self.positions)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: TopicPartition, offset: int | None) -> None:
        assert partition in self.positions, f"seek on {partition}, which is not assigned"
        self.positions[partition] = self._committed_or_earliest(partition) if offset is None else offset
        self._eof_at.pop(partition, None)

    def commit(self, offsets: dict[TopicPartition, int]) -> set[TopicPartition]:
        if self.fail_commits:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker: coordinator not available"))
        for tp, offset in offsets.items():
            self.broker.committed[(self.group, tp)] = offset
        return set()

    def close(self, leave: bool = True) -> None:
        if leave and self._error is None and self.positions:
            self._serve(_Rebalance("revoke", sorted(self.positions)))  # unsubscribe: revoke, then leave
        self.left = leave
        self.closed = True
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error

    def _committed_or_earliest(self, tp: TopicPartition) -> int:
        return self.broker.committed.get((self.group, tp), 0)  # auto.offset.reset = earliest


class LocalRegistry:
    """A schema registry in memory, with the Confluent wire format (0x00, a 4-byte id, the body),
    that a test can take down (``down = True``: every request fails as a registry that does not
    answer). A :class:`~consumer.registry.Registry`."""

    header_size = CONFLUENT_HEADER.size

    def __init__(self) -> None:
        self.schemas: dict[int, dict[str, Any]] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests = 0
        self.down = False

    def _ask(self) -> None:
        self.requests += 1
        if self.down:
            raise RegistryUnavailable("cannot reach the schema registry (it is down)")

    def parse_header(self, header: bytes) -> tuple[Hashable, bool]:
        return parse_confluent_header(header), False

    def writer_schema(self, ref: Hashable) -> dict[str, Any]:
        self._ask()
        if not isinstance(ref, int) or ref not in self.schemas:
            raise UnknownSchema(f"the schema registry has no schema id {ref}")
        return self.schemas[ref]

    def latest(self, subject: str) -> tuple[Hashable, dict[str, Any]]:
        self._ask()
        if not self.subjects.get(subject):
            raise UnknownSchema(f"the schema registry has no subject {subject!r}")
        ref = self.subjects[subject][-1]
        return ref, self.schemas[ref]

    def register(self, subject: str, schema: dict[str, Any]) -> Hashable:
        self._ask()
        ref = next((r for r, known in self.schemas.items() if known == schema), len(self.schemas) + 1)
        self.schemas[ref] = schema
        versions = self.subjects.setdefault(subject, [])
        if ref not in versions:
            versions.append(ref)
        return ref

    def frame(self, ref: Hashable, body: bytes) -> bytes:
        assert isinstance(ref, int)
        return CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, ref) + body

    def close(self) -> None:
        pass


def _implements(source: LocalSource, clock: MockedClock, registry: LocalRegistry) -> tuple[Source, Clock, Registry]:
    """Never called: mypy checks here that each implements the interface the worker takes."""
    return source, clock, registry
