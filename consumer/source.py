"""The Kafka side: the consumer's settings, batches and rebalance callbacks.

Rebalance callbacks run inside librdkafka's poll. Errors raised there are logged with their
traceback and re-raised from the next :meth:`Source.consume`, never swallowed.
"""

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from . import metrics
from .config import Pipeline
from .errors import EventfleetError
from .preflight import check_access

log = logging.getLogger(__name__)

Handler = Callable[[list[KafkaPartition]], None]


METADATA_TIMEOUT_S = 15.0
STATS_INTERVAL_MS = 5000  # consumer lag per partition for the metrics


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
        "client.id": client_id(),
    }
    settings.update(pipeline.kafka.config)
    settings["error_cb"] = _log_client_error
    return settings


def client_id() -> str:
    """Names the host and process (and its supervisor) of a group member, so that ``eventfleet
    replay`` can say which members are still running and whom to stop."""
    return f"eventfleet-{socket.gethostname()}-pid{os.getpid()}-ppid{os.getppid()}"


def _log_client_error(error: KafkaError) -> None:
    log.error("Kafka client error: %s", error)


def check_topics(pipeline: Pipeline, client: Any = None) -> None:
    """Fail fast, with the fix, when the broker is unreachable or a topic is missing."""
    servers = pipeline.kafka.bootstrap_servers
    # wrong credentials or CA: one line at once rather than a metadata timeout (see preflight.py)
    answered = check_access(pipeline.kafka, METADATA_TIMEOUT_S)
    if client is None:
        from confluent_kafka.admin import AdminClient

        client = AdminClient(pipeline.kafka.client_settings())
    try:
        found = client.list_topics(timeout=METADATA_TIMEOUT_S if answered else 1.0).topics
    except KafkaException as e:
        raise SourceError(
            f"cannot reach Kafka at {servers} within {METADATA_TIMEOUT_S:.0f} s ({e.args[0]}). Is the broker "
            "running and kafka.bootstrap_servers right? ('eventfleet kafka up' starts a local one)"
        ) from None
    for topic in pipeline.kafka.topics:
        meta = found.get(topic)
        if meta is None or meta.error is not None:
            raise SourceError(
                f"topic {topic!r} does not exist on {servers}. Create it (kafka-topics.sh --create --topic "
                f"{topic} --partitions N) or fix kafka.topics"
            )


class Source:
    """A subscribed consumer whose rebalances call the worker's handlers."""

    def __init__(
        self,
        pipeline: Pipeline,
        on_assign: Handler,
        on_revoke: Handler,
        on_lost: Handler,
        on_stats: Callable[[str], None] | None = None,
    ) -> None:
        settings = consumer_settings(pipeline)
        if on_stats is not None:
            settings.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
            settings["stats_cb"] = on_stats
        self.consumer = Consumer(settings)
        self._error: BaseException | None = None
        try:
            check_topics(pipeline, self.consumer)
        except BaseException:
            self.consumer.close()
            raise
        self.consumer.subscribe(
            list(pipeline.kafka.topics),
            on_assign=self._wrap("assign", on_assign),
            on_revoke=self._wrap("revoke", on_revoke),
            on_lost=self._wrap("lost", on_lost),
        )

    def _wrap(self, kind: str, handler: Handler) -> Callable[[Consumer, list[KafkaPartition]], None]:
        def callback(_consumer: Consumer, partitions: list[KafkaPartition]) -> None:
            metrics.REBALANCES.labels(kind).inc()
            log.info("partitions %s: %s", kind, " ".join(f"{p.topic}[{p.partition}]" for p in partitions))
            try:
                handler(partitions)
            except BaseException as e:
                log.exception("rebalance callback on_%s failed", kind)
                if self._error is None:
                    self._error = e

        return callback

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """One batch of messages (possibly empty); raises what a rebalance callback raised."""
        messages: list[Message] = self.consumer.consume(max_messages, timeout_s)
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error
        return messages

    def close(self) -> None:
        """Leave the group (the revoke callback runs first) and release the client."""
        self.consumer.close()
        if self._error is not None:
            raise RebalanceError(f"rebalance callback failed: {self._error}") from self._error
