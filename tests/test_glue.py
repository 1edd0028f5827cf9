"""AWS Glue Schema Registry (consumer/glue.py) against moto's server mode: a real HTTP server that
implements Glue's schema registry API (tests/conftest.py, ``glue_endpoint``). No Kafka needed.

Values are written both by eventfleet's own framing and by the ``aws-glue-schema-registry``
package (module ``aws_schema_registry``, the Python port of AWS's Glue serializer), and read the
way the worker reads them: header, writer schema by version UUID, zlib when flagged, then fastavro
resolving the writer schema to the reader schema.
"""

import io
import json
import re
import socket
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import boto3
import fastavro
import httpx
import pytest
from aws_schema_registry import DataAndSchema, KafkaDeserializer, KafkaSerializer, SchemaRegistryClient
from aws_schema_registry import codec as aws_codec
from aws_schema_registry.avro import AvroSchema
from moto.server import ThreadedMotoServer

from consumer.errors import EventfleetError
from consumer.glue import GlueRegistry, encode, parse_header
from consumer.registry import (
    REQUEST_TIMEOUT_S,
    BadFrame,
    RegistrySettings,
    RegistryUnavailable,
    UnknownSchema,
    connect,
)

TOPIC = "ad-events"
SUBJECT = f"{TOPIC}-value"  # what the AWS serializer's default (topic) naming strategy names the schema

V1: dict[str, Any] = {
    "type": "record",
    "name": "AdEvent",
    "namespace": "eventfleet.test",
    "fields": [
        {"name": "campaign_id", "type": "string"},
        {"name": "price_micros", "type": "int"},
        {"name": "ts", "type": "long"},
    ],
}
# v2: fields reordered, price_micros widened to long, event_type added with a default.
V2: dict[str, Any] = {
    "type": "record",
    "name": "AdEvent",
    "namespace": "eventfleet.test",
    "fields": [
        {"name": "ts", "type": "long"},
        {"name": "event_type", "type": "string", "default": "view"},
        {"name": "campaign_id", "type": "string"},
        {"name": "price_micros", "type": "long"},
    ],
}
V1_RECORDS = [{"campaign_id": f"c{i}", "price_micros": 1000 * i + 7, "ts": 1_700_000_000_000 + i} for i in range(5)]
V2_RECORDS = [
    {"ts": 1_700_000_100_000 + i, "event_type": "click", "campaign_id": f"c{i}", "price_micros": 2**40 + i}
    for i in range(5)
]


def _registry(endpoint: str, **settings: Any) -> GlueRegistry:
    registry = connect(RegistrySettings(url="glue", endpoint_url=endpoint, **settings))
    assert isinstance(registry, GlueRegistry)
    return registry


def _body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _read(registry: GlueRegistry, value: bytes, reader: dict[str, Any] = V2) -> tuple[uuid.UUID, bool, Any]:
    """Decode a framed value as the worker does; returns (writer version, compressed, record)."""
    ref, compressed = registry.parse_header(value[: registry.header_size])
    body = value[registry.header_size :]
    if compressed:
        body = zlib.decompress(body)
    writer = fastavro.parse_schema(registry.writer_schema(ref))
    record = fastavro.schemaless_reader(io.BytesIO(body), writer, fastavro.parse_schema(reader))
    assert isinstance(ref, uuid.UUID)
    return ref, compressed, record


def _as_v2(record: dict[str, Any]) -> dict[str, Any]:
    """A v1 record as the v2 reader sees it: Avro's resolution fills the added field's default."""
    return {**record, "event_type": "view"}


# ---------------------------------------------------------------------------------------------
# the wire format


def test_header_round_trip_compressed_and_not() -> None:
    version = uuid.uuid4()
    body = _body(V1, V1_RECORDS[0])
    plain, packed = encode(version, body), encode(version, body, compress=True)
    assert plain[:2] == b"\x03\x00" and plain[2:18] == version.bytes and plain[18:] == body
    assert packed[:2] == b"\x03\x05" and packed[2:18] == version.bytes and zlib.decompress(packed[18:]) == body
    assert parse_header(plain[:18]) == (version, False)
    assert parse_header(packed[:18]) == (version, True)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"\x00" + b"\x00" * 17, "header byte 0"),  # a Confluent-framed value's magic byte
        (b"\x02\x00" + uuid.uuid4().bytes, "header byte 2"),
        (b"\x03\x01" + uuid.uuid4().bytes, "compression byte 1"),
        (b"\x03\x00" + uuid.uuid4().bytes[:10], "12 bytes: too short"),
        (b"", "0 bytes: too short"),
    ],
    ids=["confluent-magic", "wrong-header-byte", "unknown-compression", "short", "empty"],
)
def test_bad_frames_are_refused(value: bytes, problem: str, glue_endpoint: str) -> None:
    registry = _registry(glue_endpoint)
    with pytest.raises(BadFrame, match=problem):
        registry.parse_header(value[: registry.header_size])
    assert registry.requests == 0


# ---------------------------------------------------------------------------------------------
# schemas in the registry


def test_two_versions_registered_and_decoded(glue_endpoint: str) -> None:
    registry = _registry(glue_endpoint)
    v1 = registry.register(SUBJECT, V1)  # the schema is created: by definition, new version, create
    assert registry.requests == 3
    v2 = registry.register(SUBJECT, V2)  # by definition, new version
    assert registry.requests == 5
    assert isinstance(v1, uuid.UUID) and isinstance(v2, uuid.UUID) and v1 != v2
    assert registry.register(SUBJECT, V1) == v1  # an identical version is reused: one request
    assert registry.requests == 6
    assert registry.latest(SUBJECT) == (v2, V2)
    assert registry.requests == 7

    values = [encode(v1, _body(V1, r), compress=i % 2 == 0) for i, r in enumerate(V1_RECORDS)]
    values += [encode(v2, _body(V2, r), compress=i % 2 == 1) for i, r in enumerate(V2_RECORDS)]
    values += [registry.frame(v2, _body(V2, V2_RECORDS[0]))]  # the Registry protocol's framing: uncompressed
    decoded = [_read(registry, value) for value in values]
    assert [record for _, _, record in decoded] == [_as_v2(r) for r in V1_RECORDS] + V2_RECORDS + V2_RECORDS[:1]
    assert [ref for ref, _, _ in decoded] == [v1] * 5 + [v2] * 6
    assert [compressed for _, compressed, _ in decoded] == [True, False] * 5 + [False]
    assert registry.requests == 7 + len(values)  # one GetSchemaVersion per writer_schema: caching is the decoder's
    assert registry.writer_schema(v1) == V1


def test_unknown_version_and_subject(glue_endpoint: str) -> None:
    registry = _registry(glue_endpoint)
    registry.register(SUBJECT, V1)
    missing = uuid.uuid4()
    with pytest.raises(UnknownSchema, match=f"no schema version {missing}"):
        registry.writer_schema(missing)
    with pytest.raises(UnknownSchema, match="no schema 'clicks-value'"):
        registry.latest("clicks-value")


def test_a_json_schema_is_not_avro(glue_endpoint: str) -> None:
    glue = boto3.client("glue", endpoint_url=glue_endpoint)
    created = glue.create_schema(
        SchemaName="json-events", DataFormat="JSON", Compatibility="NONE", SchemaDefinition='{"type": "object"}'
    )
    registry = _registry(glue_endpoint)
    with pytest.raises(UnknownSchema, match="JSON schema, not Avro"):
        registry.writer_schema(uuid.UUID(created["SchemaVersionId"]))


def test_register_in_a_registry_that_does_not_exist(glue_endpoint: str) -> None:
    with pytest.raises(EventfleetError, match="no registry 'analytics': create it, or set"):
        _registry(glue_endpoint, registry_name="analytics").register(SUBJECT, V1)
    boto3.client("glue", endpoint_url=glue_endpoint).create_registry(RegistryName="analytics")
    registry = _registry(glue_endpoint, registry_name="analytics")
    version = registry.register(SUBJECT, V1)
    assert registry.latest(SUBJECT) == (version, V1)
    with pytest.raises(UnknownSchema):  # the default registry has no such schema
        _registry(glue_endpoint).latest(SUBJECT)


# ---------------------------------------------------------------------------------------------
# a registry that cannot answer is not the message's fault


def test_stopped_registry_is_unavailable_quickly(glue_endpoint: str) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    registry = _registry(f"http://{host}:{port}")
    version = registry.register(SUBJECT, V1)
    assert registry.writer_schema(version) == V1
    server.stop()
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=f"cannot reach the Glue schema registry at http://{host}:{port}"):
        registry.writer_schema(version)
    with pytest.raises(RegistryUnavailable):
        registry.latest(SUBJECT)
    assert time.monotonic() - started < REQUEST_TIMEOUT_S  # refused connections: one retry, no long backoff
    assert registry.requests == 6  # 3 to register, 1 read, and each failed call counts once


def test_closed_port_is_unavailable(glue_endpoint: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = _registry(f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="cannot reach"):
        registry.writer_schema(uuid.uuid4())
    assert time.monotonic() - started < REQUEST_TIMEOUT_S
    assert registry.requests == 1


def test_a_registry_that_never_answers_is_unavailable_within_two_timeouts(glue_endpoint: str) -> None:
    """A silent registry (the TCP connection opens, no answer comes): each call gives up after its
    timeout and one retry, so the worker pauses in seconds instead of hanging."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes connections; nobody reads or answers
        host, port = silent.getsockname()
        timeout_s = 1.0
        registry = GlueRegistry(RegistrySettings(url="glue", endpoint_url=f"http://{host}:{port}"), timeout_s=timeout_s)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match="Read timeout"):
            registry.writer_schema(uuid.uuid4())
        elapsed = time.monotonic() - started
    assert 2 * timeout_s <= elapsed < 2 * timeout_s + 3  # two attempts, and the standard retry's backoff
    assert registry.requests == 1


def test_the_documented_policy_reads_and_without_it_the_registry_is_unavailable(
    glue_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy of helm/eventfleet/README.md (the Terraform module grants the same) is enough to read
    writer schemas; a role without it gets RegistryUnavailable naming the permission."""
    version = _registry(glue_endpoint).register(SUBJECT, V1)  # before IAM is enforced
    readme = (Path(__file__).parents[1] / "helm" / "eventfleet" / "README.md").read_text()
    [policy] = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, flags=re.S) if "glue:" in b]
    iam = boto3.client("iam", endpoint_url=glue_endpoint)
    keys = {}
    for name, document in (("fleet", policy), ("nobody", None)):
        iam.create_user(UserName=name)
        if document is not None:
            iam.put_user_policy(UserName=name, PolicyName="eventfleet", PolicyDocument=json.dumps(document))
        keys[name] = iam.create_access_key(UserName=name)["AccessKey"]
    httpx.post(f"{glue_endpoint}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()
    try:
        for name, key in keys.items():
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
            registry = _registry(glue_endpoint)
            if name == "fleet":
                assert registry.writer_schema(version) == V1
                assert registry.latest(SUBJECT) == (version, V1)
                with pytest.raises(RegistryUnavailable, match="the role needs glue:GetSchemaByDefinition"):
                    registry.register("clicks-value", V1)  # registering is not in the reading policy
            else:
                with pytest.raises(
                    RegistryUnavailable, match=r"refused the credentials .* needs glue:GetSchemaVersion"
                ):
                    registry.writer_schema(version)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        with pytest.raises(RegistryUnavailable, match="InvalidClientTokenId"):
            _registry(glue_endpoint).writer_schema(version)
    finally:
        httpx.post(f"{glue_endpoint}/moto-api/reset-auth", content=b"inf", timeout=10).raise_for_status()


def test_no_credentials_is_unavailable_and_says_so(glue_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    registry = _registry(glue_endpoint)
    with pytest.raises(RegistryUnavailable, match=r"no AWS credentials .* task role"):
        registry.writer_schema(uuid.uuid4())


def test_no_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    with pytest.raises(EventfleetError, match=r"no AWS region .* set \[schema\] region"):
        connect(RegistrySettings(url="glue"))
    registry = connect(RegistrySettings(url="glue", region="eu-west-1"))  # no request is sent yet
    assert isinstance(registry, GlueRegistry) and registry.requests == 0
    assert registry.where == "the Glue schema registry at https://glue.eu-west-1.amazonaws.com"
    registry.close()


# ---------------------------------------------------------------------------------------------
# values written by AWS's own serializer (the aws-glue-schema-registry package)


def test_values_of_the_aws_serializer_decode(glue_endpoint: str) -> None:
    glue = boto3.client("glue", endpoint_url=glue_endpoint)
    client = SchemaRegistryClient(glue, registry_name="default-registry")
    serializer = KafkaSerializer(client)  # the package's default: topic naming, BACKWARD, no compression
    plain = [serializer.serialize(TOPIC, DataAndSchema(r, AvroSchema(V1))) for r in V1_RECORDS]
    # KafkaSerializer has no compression option; the package's codec, which it frames with, has
    # (compression=True: the 5 byte and zlib, as the Java serializer's ZLIB setting writes).
    v2 = client.get_or_register_schema_version(definition=str(AvroSchema(V2)), schema_name=SUBJECT, data_format="AVRO")
    packed = [aws_codec.encode(AvroSchema(V2).write(r), v2.version_id, compression=True) for r in V2_RECORDS]

    registry = _registry(glue_endpoint)
    decoded = [_read(registry, value) for value in plain + packed]
    assert [record for _, _, record in decoded] == [_as_v2(r) for r in V1_RECORDS] + V2_RECORDS
    assert [compressed for _, compressed, _ in decoded] == [False] * 5 + [True] * 5
    assert {ref for ref, _, _ in decoded[5:]} == {v2.version_id}
    assert registry.latest(SUBJECT) == (v2.version_id, V2)
    # The schema the serializer created under the topic strategy's name is eventfleet's subject.
    assert RegistrySettings(url="glue").subject_for(TOPIC) == SUBJECT
    # Registering an identical definition reuses the serializer's version.
    assert registry.register(SUBJECT, V2) == v2.version_id


def test_values_framed_by_eventfleet_read_by_the_aws_deserializer(glue_endpoint: str) -> None:
    registry = _registry(glue_endpoint)
    version = registry.register(SUBJECT, V2)
    assert isinstance(version, uuid.UUID)
    deserializer = KafkaDeserializer(SchemaRegistryClient(boto3.client("glue", endpoint_url=glue_endpoint)))
    for i, record in enumerate(V2_RECORDS):
        value = encode(version, _body(V2, record), compress=i % 2 == 0)
        assert deserializer.deserialize(TOPIC, value).data == record
