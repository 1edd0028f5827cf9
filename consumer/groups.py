"""What ``eventfleet replay`` asks Kafka: partitions and their offsets, who is in a consumer group,
committed offsets of an empty group, and the event time at an offset.

Every call names the broker and the fix when it fails, like the rest of the start-up checks.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient

from .config import Pipeline
from .errors import EventfleetError
from .source import check_topics
from .types import TopicPartition

log = logging.getLogger(__name__)

TIMEOUT_S = 15.0


class GroupError(EventfleetError):
    """Kafka could not answer a question about the topics or the consumer group."""


@dataclass(frozen=True)
class Member:
    """An active member of a consumer group, as the group coordinator describes it."""

    client_id: str
    host: str
    member_id: str
    partitions: int


class Kafka:
    """An admin client and an unsubscribed consumer (it never joins a group nor commits)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        settings = pipeline.kafka.client_settings()
        self.admin = AdminClient(settings)
        check_topics(pipeline, self.admin)
        self.reader = Consumer(
            {**settings, "group.id": f"{pipeline.kafka.group_id}.replay-reader", "enable.auto.commit": False,
             "enable.partition.eof": False}
        )  # fmt: skip

    def close(self) -> None:
        self.reader.close()

    def partitions(self) -> list[TopicPartition]:
        """Every partition of the pipeline's topics, in order."""
        found = self.admin.list_topics(timeout=TIMEOUT_S).topics
        return [(t, p) for t in self.pipeline.kafka.topics for p in sorted(found[t].partitions)]

    def offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(earliest offset retained, end offset) per partition."""
        out = {}
        for tp in partitions:
            try:
                out[tp] = self.reader.get_watermark_offsets(KafkaPartition(*tp), timeout=TIMEOUT_S)
            except KafkaException as e:
                raise GroupError(f"cannot read the offsets of {tp[0]}[{tp[1]}]: {e.args[0]}") from None
        return out

    def members(self, group: str) -> list[Member]:
        """The group's active members (none when the group is empty or unknown)."""
        future = self.admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group]
        try:
            description = future.result()
        except KafkaException as e:
            raise GroupError(f"cannot describe consumer group {group!r}: {e.args[0]}") from None
        return [
            Member(m.client_id, m.host, m.member_id, len(m.assignment.topic_partitions) if m.assignment else 0)
            for m in description.members or []
        ]

    def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Set the group's committed offsets (the group must have no active members)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        request = ConsumerGroupTopicPartitions(group, [KafkaPartition(t, p, o) for (t, p), o in offsets.items()])
        future = self.admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group]
        try:
            result = future.result()
        except KafkaException as e:
            raise GroupError(
                f"the sink is reset, but committing the new offsets of group {group!r} to Kafka failed "
                f"({e.args[0]}); the workers start from the sink's positions anyway, and their first flush "
                "commits them"
            ) from None
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            raise GroupError(f"committing offsets of group {group!r} failed for {failed}")

    def first_event(
        self, tp: TopicPartition, offset: int, end: int, event_time: Callable[[Any], int | None]
    ) -> tuple[int, int] | None:
        """(offset, event time) of the first message at or after ``offset`` that has an event time
        (``event_time`` returns None for an undecodable one); None when there is none before ``end``."""
        if offset >= end:
            return None
        self.reader.assign([KafkaPartition(tp[0], tp[1], offset)])
        try:
            while True:
                msg = self.reader.poll(TIMEOUT_S)
                if msg is None:
                    raise GroupError(f"no message from {tp[0]}[{tp[1]}] at offset {offset} within {TIMEOUT_S:.0f} s")
                if msg.error() is not None:
                    raise GroupError(f"reading {tp[0]}[{tp[1]}] at offset {offset}: {msg.error()}")
                at: int = msg.offset() or 0
                t = event_time(msg)
                if t is not None:
                    return at, t
                if at + 1 >= end:
                    return None
        finally:
            self.reader.unassign()
