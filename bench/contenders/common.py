"""What the plain confluent-kafka contenders share: the consumer settings and the result file."""

import json
import time
from typing import Any

from confluent_kafka import Consumer

# The same fetch settings eventfleet uses, so the comparison is about the processing.
FETCH = {
    "fetch.max.bytes": 24 * 1024 * 1024,
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "queued.max.messages.kbytes": 16 * 1024,
    "queued.min.messages": 20_000,
    "fetch.queue.backoff.ms": 50,
}
BATCH = 10_000


def consumer(bootstrap: str, topic: str, group: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **FETCH,
        }
    )
    c.subscribe([topic])
    return c


def write_result(path: str, first_at: float, processed: int, **extra: Any) -> None:
    with open(path, "w") as f:
        json.dump({"first_message_at": first_at, "done_at": time.time(), "processed": processed, **extra}, f)
