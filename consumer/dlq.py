"""The dead-letter path: messages that cannot be decoded go to a Kafka topic, whole.

Each dead letter keeps the original key, value and headers, plus headers naming the error and
the source topic, partition, offset and timestamp. The flush protocol sends them and waits for
the broker's acknowledgement before the sink transaction that moves the source offsets past
them, so a message is never skipped without its dead letter being durable. Delivery is at least
once: a crash between the acknowledgement and the sink commit sends the same dead letters again.
"""

import logging
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from . import metrics
from .config import DlqSettings, Pipeline
from .errors import EventfleetError, SinkError
from .types import Reject

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 30.0


class DeadLetterError(SinkError):
    """Dead letters could not be delivered; the flush is retried like any sink failure."""


class DeadLetters:
    def __init__(self, pipeline: Pipeline) -> None:
        common = pipeline.kafka.client_settings()
        self.topics = {t: pipeline.dlq.topic or f"{t}.dlq" for t in pipeline.kafka.topics}
        self._ensure_topics(AdminClient(common))
        self.producer = Producer({**common, "enable.idempotence": True, "acks": "all", "linger.ms": 5})

    def _ensure_topics(self, admin: AdminClient) -> None:
        """Create missing dead-letter topics (as many partitions as their source topic)."""
        meta = admin.list_topics(timeout=15).topics
        missing = {dlq: src for src, dlq in self.topics.items() if dlq not in meta or meta[dlq].error is not None}
        new = []
        for dlq, src in missing.items():
            partitions = len(meta[src].partitions) if src in meta else 1
            new.append(NewTopic(dlq, num_partitions=partitions, replication_factor=-1))  # broker default
        for topic, future in admin.create_topics(new).items() if new else []:
            try:
                future.result(30)
                log.info("created dead-letter topic %s", topic)
            except Exception as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise DeadLetterError(
                        f"dead-letter topic {topic!r} does not exist and cannot be created ({e}); create it, "
                        "or set [dlq] topic to an existing one"
                    ) from None

    def send(self, rejects: list[Reject]) -> None:
        """Produce every reject and wait until the broker acknowledged them all."""
        if not rejects:
            return
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        for r in rejects:
            headers: list[tuple[str, Any]] = [
                *(r.headers or []),
                ("eventfleet.error", r.error.encode()),
                ("eventfleet.source.topic", r.topic.encode()),
                ("eventfleet.source.partition", str(r.partition).encode()),
                ("eventfleet.source.offset", str(r.offset).encode()),
                ("eventfleet.source.timestamp", str(r.timestamp_ms).encode()),
            ]
            while True:
                try:
                    self.producer.produce(self.topics[r.topic], r.value, r.key, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)
        if self.producer.flush(DELIVERY_TIMEOUT_S) or failed:
            raise DeadLetterError(
                f"{len(failed) or 'some'} of {len(rejects)} dead letters were not acknowledged"
                + (f": {failed[0]}" if failed else f" within {DELIVERY_TIMEOUT_S:.0f} s")
            )
        for r in rejects:
            metrics.DEAD_LETTERS.labels(r.topic, str(r.partition)).inc()
        log.info("%d dead letters acknowledged by %s", len(rejects), ", ".join(sorted(set(self.topics.values()))))


class InvalidInputError(EventfleetError):
    """Too many invalid messages: the worker (or tailer) stops instead of draining its input into the DLQ."""


class InvalidCaps:
    """The [dlq] caps: the share of invalid messages among the last ``ratio_window`` messages,
    and the invalid messages in a row in one partition (or lines in one file). Checked per batch
    and per reject, so valid events cost nothing here."""

    def __init__(self, settings: DlqSettings, source: str = "topic") -> None:
        self.settings = settings
        self.source = source  # what is drained: "topic", or "files" for the tailer
        self.batches: deque[tuple[int, int]] = deque()  # (messages, invalid) per recent batch
        self.seen = self.invalid = 0
        self.last: dict[str, tuple[int, int]] = {}  # partition or file -> (last invalid offset, streak)

    def rejected(self, topic: str, partition: int, offset: int) -> None:
        self.rejected_in(f"{topic}[{partition}]", offset, "offset")

    def rejected_in(self, where: str, offset: int, unit: str) -> None:
        """An invalid message at ``offset`` of ``where`` (a partition, or a file counted in lines)."""
        cap = self.settings.max_consecutive
        if cap is None:
            return
        last, streak = self.last.get(where, (-2, 0))
        streak = streak + 1 if offset == last + 1 else 1
        self.last[where] = (offset, streak)
        if streak > cap:
            what = "messages" if unit == "offset" else f"{unit}s"
            raise InvalidInputError(
                f"{streak} invalid {what} in a row in {where} up to {unit} {offset}, more than "
                f"dlq.max_consecutive = {cap}: stopping rather than sending the {self.source} to the dead-letter "
                "queue. Fix the producer (or the schema), or raise the cap"
            )

    def check(self, messages: int, invalid: int) -> None:
        ratio = self.settings.max_invalid_ratio
        if ratio is None:
            return
        self.batches.append((messages, invalid))
        self.seen += messages
        self.invalid += invalid
        while len(self.batches) > 1 and self.seen - self.batches[0][0] >= self.settings.ratio_window:
            n, bad = self.batches.popleft()
            self.seen -= n
            self.invalid -= bad
        if self.seen >= self.settings.ratio_window and self.invalid > ratio * self.seen:
            raise InvalidInputError(
                f"{self.invalid} of the last {self.seen} messages are invalid, more than dlq.max_invalid_ratio = "
                f"{ratio}: stopping rather than sending the {self.source} to the dead-letter queue. Fix the "
                "producer (or the schema), or raise the cap"
            )
