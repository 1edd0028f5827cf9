"""The Kafka side: what the worker needs of a consumer (:class:`Source`), and the real one
(:class:`KafkaSource`): its settings, batches and rebalance callbacks.

Rebalance callbacks run inside the consumer's poll. Errors raised there are logged with their
traceback and re-raised from the next :meth:`Source.consume`, never swallowed. The in-memory
source of the deterministic tests (consumer/testing.py) implements the same interface.
"""

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from . import kafkalog
from .config import Pipeline
from .errors import EventfleetError, librdkafka_config_error
from .types import TopicPartition

log = logging.getLogger(__name__)

Handler = Callable[[list[TopicPartition]], None]


METADATA_TIMEOUT_S = 15.0
METADATA_SLICE_S = 1.0  # between two looks at the clients' errors while waiting for the metadata
LEAVE_TIMEOUT_S = 10.0  # at shutdown: revoke and leave before closing


class SourceError(EventfleetError):
    """Kafka is unreachable or the topics are missing."""


class RebalanceError(EventfleetError):
    """A rebalance callback failed; the worker stops rather than risk a wrong position."""


def consumer_settings(pipeline: Pipeline) -> dict[str, Any]:
    """librdkafka settings: what every client needs (servers, authentication), eventfleet's
    guarantees, then the user's [kafka.config]."""
    settings: dict[str, Any] = {
        **pipeline.kafka.client_settings(),
        "group.id": pipeline.kafka.group_id,
        # Offsets are committed by the flush protocol only, after the sink transaction.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "partition.assignment.strategy": "cooperative-sticky",
        "auto.offset.reset": "earliest",
        # Large fetches keep the hot loop fed with few round trips; measured with bench/run.py
        # (raw loop: 300k messages/s at about 240 MB RSS, against 200k/s and 160 MB with the
        # librdkafka defaults, or 530k/s and 440 MB with 64 MB fetches).
        "fetch.max.bytes": 24 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,
        "queued.min.messages": 20_000,  # per partition; small events would otherwise queue 100k each
        # A partition whose local queue reached those limits is fetched again after this long.
        # librdkafka's default, 1 s, left the hot loop waiting for messages 34-41% of the time on
        # the benchmark's topic (about 170k events/s); at 50 ms it is fed (about 250k/s, same CPU).
        "fetch.queue.backoff.ms": 50,
        # End-of-partition events tell the worker it has caught up (a backlog is flushed at once).
        "enable.partition.eof": True,
        # librdkafka sends that event on an empty fetch response, which the broker holds this long
        # when no partition has new data: librdkafka's default, 500 ms, delayed the flush of a
        # backlog's last messages by as much (an idle consumer fetches 10 times a second instead of 2).
        "fetch.wait.max.ms": 100,
        "client.id": client_id(),
    }
    settings.update(pipeline.kafka.config)
    return settings


def client_id() -> str:
    """Names the host and process (and its supervisor) of a group member, so that ``eventfleet
    replay`` can say which members are still running and whom to stop."""
    return f"eventfleet-{socket.gethostname()}-pid{os.getpid()}-ppid{os.getppid()}"


def check_consumer_settings(pipeline: Pipeline) -> None:
    """librdkafka checks its settings when a client is created: create the workers' consumer
    once, and close it, so that a bad ``[kafka.config]`` is one line before any worker starts."""
    try:
        with kafkalog.WATCH.checking():  # a broker down is check_topics' to say, in one line
            Consumer(consumer_settings(pipeline)).close()
    except KafkaException as e:
        raise librdkafka_config_error(e) or e from None


def check_topics(pipeline: Pipeline, client: Any = None, topics: tuple[str, ...] | None = None) -> None:
    """Fail fast, with the fix, when the broker is unreachable or a topic (default: every topic the
    pipeline reads) is missing."""
    if client is None:
        from confluent_kafka.admin import AdminClient

        client = AdminClient(pipeline.kafka.client_settings())
    servers = pipeline.kafka.bootstrap_servers
    started = time.monotonic()
    with kafkalog.WATCH.checking():  # this check says what is wrong, in one line
        while True:
            try:
                found = client.list_topics(timeout=METADATA_SLICE_S).topics
                break
            except KafkaException as e:
                client.poll(0)  # serves the error callbacks: an authentication or TLS failure is known now
                failure = kafkalog.WATCH.failure(started)
                if failure is not None:
                    raise SourceError(_explain(failure, pipeline)) from None
                if time.monotonic() - started >= METADATA_TIMEOUT_S:
                    raise SourceError(
                        f"cannot reach Kafka at {servers} within {METADATA_TIMEOUT_S:.0f} s ({e.args[0]}). Is the "
                        "broker running and kafka.bootstrap_servers right? ('eventfleet kafka up' starts a local one)"
                    ) from None
    for topic in pipeline.kafka.topics if topics is None else topics:
        meta = found.get(topic)
        if meta is None or meta.error is not None:
            raise SourceError(
                f"topic {topic!r} does not exist on {servers}. Create it with 'eventfleet produce --config "
                f"{pipeline.source} --create-topic --partitions N --count 0' (N partitions; --count > 0 also "
                "produces test events), or fix kafka.topics"
            )


def create_topic(pipeline: Pipeline, topic: str, partitions: int | None) -> bool:
    """Create ``topic`` on the pipeline's cluster (None: the broker's default partition count, and
    always its default replication factor); False when it exists already."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient(pipeline.kafka.client_settings())
    check_topics(pipeline, admin, topics=())  # an unreachable broker is said as such
    future = admin.create_topics([NewTopic(topic, partitions or -1, -1)], request_timeout=METADATA_TIMEOUT_S)[topic]
    try:
        future.result(METADATA_TIMEOUT_S + 5)
    except KafkaException as e:
        if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise SourceError(
            f"cannot create topic {topic!r} on {pipeline.kafka.bootstrap_servers}: {e.args[0].str()}"
        ) from None
    return True


def _explain(failure: kafkalog.Failure, pipeline: Pipeline) -> str:
    servers = pipeline.kafka.bootstrap_servers
    reason = re.sub(r"\s*\(after \d+ms in state \w+\)$", "", failure.detail.split(": ", 1)[-1])
    if failure.kind == "authentication":
        user = pipeline.kafka.client_settings().get("sasl.username")
        who = f"the credentials of user {user!r}" if user else "this client's credentials"
        return (
            f"Kafka at {servers} refused {who} ({reason}). Fix: check [kafka] auth, username and password "
            "(and that the user exists on the cluster with this mechanism)"
        )
    return (
        f"the TLS handshake with Kafka at {servers} failed ({reason}). Fix: check [kafka] tls (is this port a "
        "TLS listener?) and ca_file (the CA that signed the brokers' certificates)"
    )


class Source(Protocol):
    """What the worker needs of its consumer: a subscription whose rebalances call the worker's
    handlers (inside :meth:`consume`), batches of messages (confluent-kafka ``Message`` objects,
    error events such as end-of-partition included), and the positions it moves by hand."""

    def subscribe(self, on_assign: Handler, on_revoke: Handler, on_lost: Handler) -> None:
        """Join the group; the handlers run inside later :meth:`consume` calls."""
        ...

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """One batch (possibly empty): the messages there are now, up to ``max_messages``, waiting
        up to ``timeout_s`` only when there are none. Raises RebalanceError when a handler failed."""
        ...

    def assign(self, offsets: dict[TopicPartition, int | None]) -> None:
        """Add these partitions to the assignment (from a handler of ``on_assign``), each read from
        the given offset (None: the group's committed offset, else the earliest)."""
        ...

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int | None) -> None:
        """Read ``partition`` from ``offset`` next (None: the committed offset, else the earliest)."""
        ...

    def commit(self, offsets: dict[TopicPartition, int]) -> set[TopicPartition]:
        """Commit the group's offsets, synchronously; returns the partitions whose commit failed.
        Raises KafkaException when the commit failed as a whole."""
        ...

    def close(self, leave: bool = True) -> None:
        """Leave the group (revoking first) unless ``leave`` is False, and release the client."""
        ...


class KafkaSource:
    """A :class:`Source` on a real Kafka consumer. Created before the worker (the topics are
    checked at once); :meth:`subscribe` joins the group."""

    def __init__(
        self,
        pipeline: Pipeline,
        group_instance_id: str | None = None,
    ) -> None:
        self.topics = list(pipeline.kafka.topics)
        settings = consumer_settings(pipeline)
        if group_instance_id is not None:  # static membership (fleet.py): a restart keeps the partitions
            settings["group.instance.id"] = group_instance_id
        self.on_stats: Callable[[str], None] | None = None  # the lag per partition (librdkafka statistics)
        settings["stats_cb"] = kafkalog.client_hooks(self._stats)["stats_cb"]  # the lag, and brokers back
        self.consumer = Consumer(settings)
        self._error: BaseException | None = None
        try:
            check_topics(pipeline, self.consumer)
        except BaseException:
            self.consumer.close()
            raise

    def _stats(self, stats_json: str) -> None:
        if self.on_stats is not None:
            self.on_stats(stats_json)

    def subscribe(self, on_assign: Handler, on_revoke: Handler, on_lost: Handler) -> None:
        self.consumer.subscribe(
            self.topics,
            on_assign=self._wrap("assign", on_assign),
            on_revoke=self._wrap("revoke", on_revoke),
            on_lost=self._wrap("lost", on_lost),
        )

    def _wrap(self, kind: str, handler: Handler) -> Callable[[Consumer, list[KafkaPartition]], None]:
        def callback(_consumer: Consumer, partitions: list[KafkaPartition]) -> None:
            log.info("partitions %s: %s", kind, " ".join(f"{p.topic}[{p.partition}]" for p in partitions))
            try:
                handler([(p.topic, p.partition) for p in partitions])
            except BaseException as e:
                log.exception("rebalance callback on_%s failed", kind)
                if self._error is None:
                    self._error = e

        return callback

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        # librdkafka's consume(n, timeout) returns once it holds n messages, else at the timeout:
        # the last messages of a backlog (and each event of a quiet topic) waited the worker's
        # whole poll timeout, 0.5 s, before being aggregated and flushed. Take what is queued, and
        # wait only for the first message when nothing is.
        messages = self._consume(max_messages, 0)
        if not messages and timeout_s > 0:
            messages = self._consume(1, timeout_s)
            if messages and max_messages > 1:
                messages += self._consume(max_messages - 1, 0)  # what arrived with it
        return messages

    def _consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = self.consumer.consume(max_messages, timeout_s)
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error
        return messages

    def assign(self, offsets: dict[TopicPartition, int | None]) -> None:
        partitions = []
        for (topic, partition), offset in offsets.items():
            p = KafkaPartition(topic, partition)
            if offset is not None:  # else librdkafka starts from the committed offset, else earliest
                p.offset = offset
            partitions.append(p)
        self.consumer.incremental_assign(partitions)

    def assignment(self) -> list[TopicPartition]:
        return [(p.topic, p.partition) for p in self.consumer.assignment()]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.consumer.pause([KafkaPartition(*tp) for tp in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.consumer.resume([KafkaPartition(*tp) for tp in partitions])

    def seek(self, partition: TopicPartition, offset: int | None) -> None:
        if offset is None:
            committed = self.consumer.committed([KafkaPartition(*partition)], timeout=10)[0]
            offset = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
        self.consumer.seek(KafkaPartition(partition[0], partition[1], offset))

    def commit(self, offsets: dict[TopicPartition, int]) -> set[TopicPartition]:
        tps = [KafkaPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        results = self.consumer.commit(offsets=tps, asynchronous=False) or []
        return {(r.topic, r.partition) for r in results if r.error is not None}

    def close(self, leave: bool = True) -> None:
        """Leave the group (the revoke callback runs first) and release the client.

        A static member (group.instance.id) does not leave when its consumer closes: its
        partitions would wait for its session to expire. Leaving: unsubscribe first, which
        revokes and sends the LeaveGroup, so they move at once. ``leave=False`` keeps a static
        member's partitions for the worker that replaces it in the same slot."""
        if leave and self._error is None:
            try:
                self.consumer.unsubscribe()
                deadline = time.monotonic() + LEAVE_TIMEOUT_S
                while self.consumer.assignment() and time.monotonic() < deadline:
                    self.consumer.poll(0.1)  # serves the revoke callback; what it returns is never processed
            except KafkaException as e:  # a consumer in a fatal state: close() is all that is left
                log.warning("could not leave the group before closing: %s", e)
        self.consumer.close()
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error
