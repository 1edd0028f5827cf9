"""Values framed by a schema registry (the Confluent wire format), written by confluent-kafka's
own AvroSerializer against a real registry, read exactly by the workers (real broker)."""

import copy
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .conftest import SCHEMA_PATH, Kafka, assert_exact, generate, ground_truth, wait_for

pytestmark = pytest.mark.integration

READER = json.loads(SCHEMA_PATH.read_text())


def _v1() -> dict[str, Any]:
    """The producers' first version: the price is an int."""
    v1 = copy.deepcopy(READER)
    next(f for f in v1["fields"] if f["name"] == "price_micros")["type"] = "int"
    return v1


def _v2() -> dict[str, Any]:
    """The next version: the price widened to a long, the fields reordered, a field added with
    a default."""
    v2 = copy.deepcopy(READER)
    v2["fields"] = [*reversed(v2["fields"]), {"name": "region", "type": "string", "default": "eu"}]
    return v2


class Writer:
    """confluent-kafka's AvroSerializer for one schema version (the topic's subject, registered
    on first use), as a producer application would set it up."""

    def __init__(self, url: str, topic: str, schema: dict[str, Any]) -> None:
        client = SchemaRegistryClient({"url": url, "timeout": 10})
        conf = {"auto.register.schemas": True, "subject.name.strategy.type": "TOPIC"}  # not associations
        self.serializer = AvroSerializer(client, json.dumps(schema), conf=conf)
        self.ctx = SerializationContext(topic, MessageField.VALUE)
        self.extra = {"region": "us"} if any(f["name"] == "region" for f in schema["fields"]) else {}

    def __call__(self, record: dict[str, Any]) -> bytes:
        value = self.serializer({**record, **self.extra}, self.ctx)
        assert value is not None
        return value


def framed(url: str, topic: str, events: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, bytes]]:
    """Each event framed with v1 or v2, interleaved (every third event is v2)."""
    v1, v2 = Writer(url, topic, _v1()), Writer(url, topic, _v2())
    return [(p, (v2 if i % 3 == 0 else v1)(r)) for i, (p, r) in enumerate(events)]


def read_dead_letters(kafka: Kafka, topic: str, n: int) -> list[dict[str, str]]:
    """The headers of the first ``n`` dead letters of ``topic`` (fails if fewer arrive in 30 s)."""
    dlq = f"{topic}.dlq"
    reader = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False})
    reader.assign([TopicPartition(dlq, q, 0) for q in kafka.ends(dlq)])
    letters: list[Any] = []
    deadline = time.monotonic() + 30
    while len(letters) < n and time.monotonic() < deadline:
        letters += [m for m in reader.consume(100, 1.0) if m.error() is None]
    reader.close()
    assert len(letters) == n, f"{len(letters)} dead letters, expected {n}"
    return [{k: v.decode() for k, v in m.headers()} for m in letters]


def dead_letter_count(kafka: Kafka, topic: str) -> int:
    try:
        return sum(kafka.ends(f"{topic}.dlq").values())
    except KeyError:  # no dead-letter topic: nothing was ever sent there
        return 0


def test_two_writer_versions_are_exact_through_a_sigkill(kafka: Kafka, pipeline, registry_url: str) -> None:
    p = pipeline(partitions=4, flush="500ms", schema=f'registry = "{registry_url}"')
    events = generate(60_000, 4, seed=21)
    values = framed(registry_url, p.topic, events)
    assert len({v[:5] for _, v in values}) == 2  # two writer schema ids, interleaved
    kafka.produce(p.topic, values[:20_000])
    survivor = p.start_worker()
    victim = p.start_worker()
    wait_for(lambda: len(p.positions()) == 4, 120, "both workers flushing")
    producing = kafka.produce_in_background(p.topic, values[20_000:], 8.0)
    victim.kill()
    victim.wait()
    assert producing.is_alive()  # the kill landed mid-stream
    p.start_worker()
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert survivor.poll() is None
    assert p.stop_all() == [0, 0]
    assert_exact(p, ground_truth(events), ends)
    assert dead_letter_count(kafka, p.topic) == 0


def test_unknown_ids_missing_magic_bytes_and_truncated_bodies_are_dead_letters(
    kafka: Kafka, pipeline, registry_url: str
) -> None:
    p = pipeline(partitions=1, schema=f'registry = "{registry_url}"')
    good = framed(registry_url, p.topic, generate(3_000, 1, seed=22))
    valid = good[0][1]
    poison = {
        "unknown id": b"\x00\x7f\xff\xff\x01" + valid[5:],  # an id no registry here has given out
        "no magic byte": b"\x01" + valid[1:],
        "truncated": valid[:-3],
    }
    events: list[tuple[int, Any]] = list(good)
    for i, value in enumerate(poison.values()):
        events.insert(700 * (i + 1), (0, value))
    kafka.produce(p.topic, events)
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    truth = ground_truth([(q, r) for q, r in generate(3_000, 1, seed=22)])
    assert_exact(p, truth, ends)
    letters = read_dead_letters(kafka, p.topic, len(poison))
    errors = [h["eventfleet.error"] for h in sorted(letters, key=lambda h: int(h["eventfleet.source.offset"]))]
    assert errors[0].startswith("UnknownSchema(") and "schema id 2147483393" in errors[0]  # 0x7fffff01
    assert errors[1].startswith("BadFrame(") and "magic byte 1" in errors[1]
    assert not errors[2].startswith(("UnknownSchema", "BadFrame"))  # the body does not decode
    offsets = sorted(int(h["eventfleet.source.offset"]) for h in letters)
    assert offsets == [i for i, (_, v) in enumerate(events) if isinstance(v, bytes) and v in poison.values()]


class CountingProxy:
    """A plain HTTP proxy in front of the registry that counts the requests per path: what the
    registry was asked, counted outside eventfleet. ``authorization``: the one Authorization
    header it lets through (else 401, as a registry with authentication answers); ``tls``: the
    (certificate, key) files it serves HTTPS with."""

    def __init__(self, upstream: str, authorization: str | None = None, tls: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.counts[f"{self.command} {self.path}"] += 1
                if authorization is not None and self.headers.get("Authorization") != authorization:
                    self.send_response(401)
                    body = b'{"error_code": 40101, "message": "Unauthorized"}'
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                r = httpx.request(self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=10)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = _forward

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_each_writer_schema_is_fetched_once_per_worker(kafka: Kafka, pipeline, registry_url: str) -> None:
    upstream = registry_url.split("/apis/")[0] if "/apis/" in registry_url else registry_url
    proxy = CountingProxy(upstream)
    try:
        url = proxy.url + registry_url[len(upstream) :]
        p = pipeline(partitions=4, schema=f'registry = "{url}"')
        events = generate(40_000, 4, seed=23)
        values = framed(registry_url, p.topic, events)
        ids = {int.from_bytes(v[1:5], "big") for _, v in values}
        kafka.produce(p.topic, values)
        ends = kafka.ends(p.topic)
        p.start_worker()
        p.start_worker()
        p.wait_caught_up(ends)
        assert p.stop_all() == [0, 0]
        assert_exact(p, ground_truth(events), ends)
        fetches = {k: n for k, n in proxy.counts.items() if "/schemas/ids/" in k}
        assert {int(k.split("/schemas/ids/")[1].split("?")[0]) for k in fetches} == ids
        assert all(n <= 2 for n in fetches.values()), fetches  # once per worker at most
        assert sum(proxy.counts.values()) == sum(fetches.values()) <= 2 * len(ids)
    finally:
        proxy.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_a_registry_outage_pauses_the_worker_and_loses_nothing(kafka: Kafka, pipeline, registry_server: Any) -> None:
    """The registry is stopped for 15 s while values of a writer version the worker has not
    seen yet arrive: the worker pauses (never dead-letters them), resumes by itself once the
    registry is back, and the results are exact."""
    url = registry_server.url
    p = pipeline(partitions=2, flush="500ms", schema=f'registry = "{url}"')
    events = generate(20_000, 2, seed=24)
    v1, v2 = Writer(url, p.topic, _v1()), Writer(url, p.topic, _v2())
    first = [(q, v1(r)) for q, r in events[:10_000]]
    later = [(q, v2(r)) for q, r in events[10_000:]]  # v2 registered now, first read during the outage
    kafka.produce(p.topic, first)
    port = _free_port()
    worker = p.start_worker(metrics_port=port)
    p.wait_caught_up(kafka.ends(p.topic))

    registry_server.stop()
    stopped = time.monotonic()
    try:
        kafka.produce(p.topic, later)
        wait_for(lambda: _metric(port, "eventfleet_registry_outage_seconds") > 0, 30, "the worker to see the outage")
        assert _metric(port, "eventfleet_paused_partitions") == 2
        time.sleep(max(0.0, 15 - (time.monotonic() - stopped)))  # the outage lasts 15 s
        assert worker.poll() is None
        assert dead_letter_count(kafka, p.topic) == 0
    finally:
        registry_server.up()
    back = time.monotonic()
    wait_for(lambda: _metric(port, "eventfleet_paused_partitions") == 0, 60, "the partitions to resume")
    print(f"recovery: registry back, partitions resumed {time.monotonic() - back:.1f} s after it answered")
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert worker.poll() is None  # the same worker, never restarted
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)
    assert dead_letter_count(kafka, p.topic) == 0


def test_glue_framed_values_compressed_and_not_are_exact(kafka: Kafka, pipeline, glue_endpoint: str) -> None:
    """Values written by the aws-glue-schema-registry package (uncompressed by its serializer,
    zlib-compressed by its codec) in two writer versions, read by a worker from moto's Glue."""
    import boto3
    from aws_schema_registry import DataAndSchema, KafkaSerializer, SchemaRegistryClient
    from aws_schema_registry import codec as aws_codec
    from aws_schema_registry.avro import AvroSchema

    p = pipeline(partitions=2, schema=f'registry = "glue"\nendpoint_url = "{glue_endpoint}"\nregion = "us-east-1"')
    client = SchemaRegistryClient(boto3.client("glue", endpoint_url=glue_endpoint), registry_name="default-registry")
    serializer = KafkaSerializer(client)
    v1, v2 = AvroSchema(_v1()), AvroSchema(_v2())
    v2_id = client.get_or_register_schema_version(
        definition=str(v2), schema_name=f"{p.topic}-value", data_format="AVRO"
    ).version_id
    events = generate(6_000, 2, seed=25)
    values = []
    for i, (q, r) in enumerate(events):
        if i % 2:
            values.append((q, serializer.serialize(p.topic, DataAndSchema(r, v1))))
        else:
            values.append((q, aws_codec.encode(v2.write({**r, "region": "us"}), v2_id, compression=True)))
    assert {v[1] for _, v in values} == {0, 5}  # uncompressed and zlib
    kafka.produce(p.topic, values)
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth(events), ends)
    assert dead_letter_count(kafka, p.topic) == 0
