"""The tailer's file positions in a compacted Kafka topic, written in its transactions.

One record per file (per content stream of a file: a truncated file starts a new one), keyed
``<tailer id>/<device>:<inode>:<fingerprint length>:<fingerprint>``, its value JSON: the identity,
the last path, the byte offset after the last complete line read. A tombstone forgets a file. The
key ``<tailer id>/started`` marks that the tailer has started once (``start = "end"`` applies to
the files present at the very first start only).

As Kafka Connect's exactly-once sources do (KIP-618), the positions are produced in the same
transaction as the records they cover, so that a ``read_committed`` reader of this topic sees a
position only together with the records up to it.
"""

import json
import logging
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ..errors import EventfleetError
from .files import Identity, Position

log = logging.getLogger(__name__)

VERSION = 1
STARTED = "started"
METADATA_TIMEOUT_S = 15.0


class PositionsError(EventfleetError):
    """The positions topic cannot be created or read."""


def record_key(tailer: str, identity: Identity) -> bytes:
    return f"{tailer}/{identity.key()}".encode()


def started_key(tailer: str) -> bytes:
    return f"{tailer}/{STARTED}".encode()


def encode(tailer: str, p: Position) -> bytes:
    i = p.identity
    return json.dumps({"eventfleet_tail": VERSION, "tailer": tailer, "dev": i.dev, "ino": i.ino,
                       "fingerprint": i.fp, "fingerprint_bytes": i.fp_len, "path": p.path, "offset": p.offset,
                       "updated_ms": p.updated_ms}, separators=(",", ":")).encode()  # fmt: skip


def encode_started(tailer: str) -> bytes:
    return json.dumps({"eventfleet_tail": VERSION, "tailer": tailer, "started_ms": int(time.time() * 1000)}).encode()


def decode(value: bytes) -> Position:
    d = json.loads(value)
    identity = Identity(int(d["dev"]), int(d["ino"]), int(d["fingerprint_bytes"]), str(d["fingerprint"]))
    return Position(identity, str(d["path"]), int(d["offset"]), int(d.get("updated_ms", 0)))


def ensure_topics(admin: AdminClient, topic: str, positions: str, dead_letters: str | None) -> None:
    """The events topic must exist; the positions topic (compacted, one partition) and the
    dead-letter topic are created when missing."""
    try:
        found = admin.list_topics(timeout=METADATA_TIMEOUT_S).topics
    except KafkaException as e:
        raise PositionsError(f"cannot reach Kafka ({e.args[0]}). Is the broker running and kafka.bootstrap_servers "
                             "right? ('eventfleet kafka up' starts a local one)") from None  # fmt: skip
    meta = found.get(topic)
    if meta is None or meta.error is not None:
        raise PositionsError(f"topic {topic!r} does not exist: create it (kafka-topics.sh --create --topic {topic} "
                             "--partitions N) or set [ingest] topic")  # fmt: skip
    new = []
    if positions not in found:
        new.append(NewTopic(positions, 1, -1, config={"cleanup.policy": "compact"}))
    if dead_letters is not None and dead_letters not in found:
        new.append(NewTopic(dead_letters, len(meta.partitions), -1))
    for name, future in admin.create_topics(new).items() if new else []:
        try:
            future.result(30)
            log.info("created topic %s", name)
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise PositionsError(f"topic {name!r} is missing and cannot be created ({e}); create it") from None


def load(settings: dict[str, Any], topic: str, tailer: str, timeout_s: float) -> tuple[dict[str, Position], bool]:
    """This tailer's committed positions (by identity key) and whether it started before: the
    topic read with read_committed to the end it had when the read began. Call it after
    ``init_transactions``, which settles this tailer's own open transaction; another tailer's
    open transaction on the topic holds the read until it ends (transaction.timeout.ms)."""
    consumer = Consumer({**settings, "group.id": f"eventfleet-tail-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "enable.partition.eof": True})  # fmt: skip
    prefix = f"{tailer}/".encode()
    known: dict[str, Position] = {}
    started = False
    try:
        meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
        if meta.error is not None:
            raise PositionsError(f"cannot read the positions topic {topic!r}: {meta.error}")
        ends = {p: consumer.get_watermark_offsets(KafkaPartition(topic, p), timeout=METADATA_TIMEOUT_S)[1]
                for p in meta.partitions}  # fmt: skip
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign([KafkaPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise PositionsError(f"the positions topic {topic!r} was not readable to its end within "
                                     f"{timeout_s:.0f} s: a transaction left open holds it")  # fmt: skip
            for msg in consumer.consume(1000, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if (msg.offset() or 0) >= ends[msg.partition()]:
                            pending.discard(msg.partition())
                        continue
                    raise PositionsError(f"reading the positions topic {topic!r} failed: {error}")
                if (msg.offset() or 0) + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
                key = msg.key() or b""
                if not key.startswith(prefix):
                    continue
                name = key[len(prefix) :].decode()
                value = msg.value()
                if name == STARTED:
                    started = True
                elif value is None:
                    known.pop(name, None)
                else:
                    known[name] = decode(value)
            if pending:  # past the last record there may be only markers: ask where the fetch is
                for tp in consumer.position([KafkaPartition(topic, p) for p in pending]):
                    if tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
    except KafkaException as e:
        raise PositionsError(f"cannot read the positions topic {topic!r}: {e.args[0]}") from None
    finally:
        consumer.close()
    return known, started
