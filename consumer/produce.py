"""The load generator: synthetic events valid for a pipeline's schema, produced to Kafka.

Values follow the field types; group-by fields draw from small pools (realistic key
cardinality), enums are skewed towards their first symbols, the time field advances steadily
with a small share of events delayed (out of order, some of them late). A seed makes the
stream reproducible.
"""

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from .config import Pipeline
from .decode import make_encoder
from .errors import EventfleetError
from .progress import Progress
from .registry import RegistrySettings, RegistryUnavailable, connect

POOL_SIZES = (200, 12, 8, 6)  # distinct values of the 1st, 2nd, ... group-by field


@dataclass
class ProduceSummary:
    produced: int
    failed: int
    seconds: float
    first_event_ms: int
    last_event_ms: int


def _field_maker(name: str, avro: Any, rng: random.Random, pool: int | None) -> Callable[[], Any]:
    kind = avro.get("type") if isinstance(avro, dict) else avro
    if kind == "enum":
        symbols = avro["symbols"]
        weights = [1 / (i + 1) ** 2 for i in range(len(symbols))]
        return lambda: rng.choices(symbols, weights)[0]
    if kind == "string":
        prefix = name.removesuffix("_id")[:8]
        if pool is not None:
            values = [f"{prefix}-{i:04d}" for i in range(pool)]
            return lambda: rng.choice(values)
        return lambda: f"{prefix}-{rng.getrandbits(48):012x}"
    if kind in ("int", "long"):
        if pool is not None:
            return lambda: rng.randrange(pool)
        top = 2**31 - 1 if kind == "int" else 10_000_000
        return lambda: rng.randrange(top)
    if kind in ("float", "double"):
        return lambda: round(rng.uniform(0, 1000), 3)
    if kind == "boolean":
        return lambda: rng.random() < 0.5
    if kind == "bytes":
        return lambda: rng.randbytes(8)
    if isinstance(avro, list):  # a union: its first branch (null where nullable)
        return _field_maker(name, avro[0], rng, pool) if avro[0] != "null" else (lambda: None)
    raise EventfleetError(f"the generator cannot make values for field {name!r} of type {avro!r}")


def events(
    pipeline: Pipeline,
    seed: int,
    start_ms: int,
    events_per_s: float,
    out_of_order: float = 0.02,
    max_delay_ms: int = 90_000,
    schema: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """An endless stream of records for the pipeline's schema (or another version of it)."""
    rng = random.Random(seed)
    group_by = pipeline.aggregate.group_by
    time_field = pipeline.window.time_field
    makers = {}
    for field in (schema or pipeline.schema)["fields"]:
        name = field["name"]
        if name == time_field:
            continue
        pool = POOL_SIZES[min(group_by.index(name), len(POOL_SIZES) - 1)] if name in group_by else None
        makers[name] = _field_maker(name, field["type"], rng, pool)
    step_ms = 1000 / events_per_s
    i = 0
    while True:
        record = {name: make() for name, make in makers.items()}
        if time_field is not None:
            t = start_ms + int(i * step_ms)
            if rng.random() < out_of_order:
                t -= rng.randrange(max_delay_ms)
            record[time_field] = t
        yield record
        i += 1


def framed_encoder(
    settings: RegistrySettings, subject: str, schema: dict[str, Any]
) -> Callable[[dict[str, Any]], bytes]:
    """``encode(record) -> bytes`` framed for the registry, after registering ``schema`` under
    ``subject`` (an identical version already there is reused)."""
    frame = registered_frame(settings, subject, schema)
    body = make_encoder(schema)
    return lambda record: frame(body(record))


def registered_frame(settings: RegistrySettings, subject: str, schema: dict[str, Any]) -> Callable[[bytes], bytes]:
    """``frame(body) -> bytes``: an Avro body of ``schema`` behind the registry's header, after
    registering ``schema`` under ``subject`` (for writers with an encoder of their own)."""
    registry = connect(settings)
    try:
        ref = registry.register(subject, schema)
    except RegistryUnavailable as e:
        raise EventfleetError(f"{e}; start the registry (eventfleet registry up) or fix [schema] registry") from None
    finally:
        registry.close()
    return lambda body: registry.frame(ref, body)


def produce(
    pipeline: Pipeline,
    count: int,
    rate: float = 0.0,
    seed: int = 1,
    start_ms: int | None = None,
    events_per_s: float | None = None,
    topic: str | None = None,
    progress: bool = True,
    out_of_order: float = 0.02,
    max_delay_ms: int = 90_000,
    schema: dict[str, Any] | None = None,
) -> ProduceSummary:
    """Produce ``count`` events to the pipeline's (first) topic; ``rate`` limits events/s (0: no limit).

    Event times start at ``start_ms`` (default: now) and advance ``events_per_s`` per second of
    event time (default: ``rate``, else 2,000). A share ``out_of_order`` of the events is
    delayed by up to ``max_delay_ms``. Values are written with ``schema`` (default: the
    pipeline's); with a registry in the pipeline, that schema is registered under the topic's
    subject and every value is framed with its id.
    """
    topic = topic or pipeline.kafka.topics[0]
    writer = dict(schema or pipeline.schema)
    encode = make_encoder(writer)
    if pipeline.registry is not None:
        encode = framed_encoder(pipeline.registry, pipeline.registry.subject_for(topic), writer)
    start_ms = start_ms if start_ms is not None else int(time.time() * 1000)
    stream = events(pipeline, seed, start_ms, events_per_s or rate or 2000.0, out_of_order, max_delay_ms, writer)
    key_field = pipeline.aggregate.group_by[0] if pipeline.aggregate.group_by else None
    time_field = pipeline.window.time_field
    producer = Producer(
        {
            **pipeline.kafka.client_settings(),
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err)

    started = time.monotonic()
    first = last = start_ms
    bar = Progress(count, f"produce {topic}", enabled=progress)
    for i in range(count):
        record = next(stream)
        if time_field is not None:
            t = record[time_field]
            first, last = min(first, t), max(last, t)
        key = str(record[key_field]).encode() if key_field else None
        while True:
            try:
                producer.produce(topic, encode(record), key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: wait for deliveries
        if i % 1000 == 999:
            producer.poll(0)
            bar.update(1000)
            if rate:
                ahead_s = (i + 1) / rate - (time.monotonic() - started)
                if ahead_s > 0:
                    time.sleep(ahead_s)
    remaining = producer.flush(60)
    bar.update(count - bar.n)
    bar.close()
    if remaining:
        raise EventfleetError(f"{remaining} events were not delivered within 60 s; is the broker up?")
    if failed:
        raise EventfleetError(f"{len(failed)} of {count} events failed to deliver, first error: {failed[0]}")
    return ProduceSummary(count, len(failed), time.monotonic() - started, first, last)
