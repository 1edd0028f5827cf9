"""The commands with a schema registry: produce registers and frames, check-config checks the
subject's latest version, the kafka sink frames its output for downstream deserializers
(real broker, real registry)."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from .conftest import SCHEMA_PATH, Kafka, assert_exact, combine, ground_truth, read_to_end, wait_for
from .test_registry import CountingProxy, _v2

pytestmark = pytest.mark.integration


def eventfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], capture_output=True, text=True, timeout=300)


def read_topic(bootstrap: str, topic: str, url: str, output: bool = False) -> list[Any]:
    """Every record of ``topic`` as (partition, key, value), in offset order per partition,
    decoded with confluent-kafka's AvroDeserializer (what a downstream consumer uses): source
    values with the pipeline's schema as the reader schema (keys are text); ``output``: a kafka
    sink's records, keys and values in their own writer schemas."""
    client = SchemaRegistryClient({"url": url, "timeout": 10})
    values = AvroDeserializer(client) if output else AvroDeserializer(client, Schema(SCHEMA_PATH.read_text(), "AVRO"))
    keys = AvroDeserializer(client)
    out = []
    for m in read_to_end(bootstrap, topic):
        key = _millis(keys(m.key(), SerializationContext(topic, MessageField.KEY))) if output else m.key()
        value = _millis(values(m.value(), SerializationContext(topic, MessageField.VALUE)))
        out.append((m.partition(), key, value))
    return out


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _millis(record: dict[str, Any]) -> dict[str, Any]:
    """fastavro gives timestamp-millis as datetimes: back to epoch ms, as the pipeline reads them."""
    return {k: (v - EPOCH) // timedelta(milliseconds=1) if isinstance(v, datetime) else v for k, v in record.items()}


def test_produce_registers_both_versions_and_the_worker_is_exact(
    kafka: Kafka, pipeline, registry_url: str, tmp_path: Path
) -> None:
    p = pipeline(partitions=2, schema=f'registry = "{registry_url}"')
    v2 = tmp_path / "v2.avsc"
    v2.write_text(json.dumps(_v2()))
    first = eventfleet("produce", "--config", str(p.path), "--count", "4000", "--seed", "3", "--start", "1800000000000")
    assert first.returncode == 0, first.stderr
    second = eventfleet("produce", "--config", str(p.path), "--count", "4000", "--seed", "4", "--start",
                        "1800000002000", "--schema", str(v2))  # fmt: skip
    assert second.returncode == 0, second.stderr
    records = read_topic(kafka.bootstrap, p.topic, registry_url)
    assert len(records) == 8000
    ends = kafka.ends(p.topic)
    p.start_worker()
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth([(q, v) for q, _, v in records]), ends)
    client = SchemaRegistryClient({"url": registry_url, "timeout": 10})
    assert len(client.get_versions(f"{p.topic}-value")) == 2  # the pipeline's schema, then v2


def test_check_config_checks_the_subject(kafka: Kafka, pipeline, registry_url: str) -> None:
    p = pipeline(partitions=1, schema=f'registry = "{registry_url}"')
    missing = eventfleet("check-config", "--config", str(p.path))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "schema.subject" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr

    produced = eventfleet("produce", "--config", str(p.path), "--count", "10")
    assert produced.returncode == 0, produced.stderr
    ok = eventfleet("check-config", "--config", str(p.path))
    assert ok.returncode == 0, ok.stderr
    assert f"subject {p.topic}-value: its latest version" in ok.stdout

    no_price = json.loads(SCHEMA_PATH.read_text())
    no_price["fields"] = [f for f in no_price["fields"] if f["name"] != "price_micros"]
    SchemaRegistryClient({"url": registry_url, "timeout": 10}).register_schema(
        f"{p.topic}-value", Schema(json.dumps(no_price), "AVRO")
    )
    unresolvable = eventfleet("check-config", "--config", str(p.path))
    assert unresolvable.returncode == 2
    assert unresolvable.stderr.count("\n") == 1 and "'price_micros'" in unresolvable.stderr, unresolvable.stderr


def test_a_registry_that_is_down_is_one_line_at_start_up(kafka: Kafka, pipeline) -> None:
    p = pipeline(partitions=1, schema='registry = "http://127.0.0.1:9/apis/ccompat/v7"')  # the discard port
    for command in (["check-config"], ["produce", "--count", "10"]):
        r = eventfleet(*command, "--config", str(p.path))
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # without a reader schema of its own, the pipeline needs the registry to start
    text = p.path.read_text().replace(f'path = "{SCHEMA_PATH}"\n', "")
    p.path.write_text(text)
    r = eventfleet("worker", "--config", str(p.path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "schema.registry" in r.stderr, r.stderr


def test_the_kafka_sink_frames_its_output_for_downstream_deserializers(
    kafka: Kafka, pipeline, registry_url: str
) -> None:
    p = pipeline(partitions=2, sink="kafka", schema=f'registry = "{registry_url}"')
    p.path.write_text(p.path.read_text().replace('type = "kafka"\n', 'type = "kafka"\nregistry = true\n'))
    produced = eventfleet("produce", "--config", str(p.path), "--count", "5000", "--start", "1800000000000")
    assert produced.returncode == 0, produced.stderr
    records = read_topic(kafka.bootstrap, p.topic, registry_url)
    ends = kafka.ends(p.topic)
    p.start_worker()
    wait_for(lambda: kafka.committed(p.topic, p.group, 2) == ends, 120, "the offsets committed with the output")
    assert p.stop_all() == [0]
    output = read_topic(kafka.bootstrap, p.out_topic, registry_url, output=True)
    assert all(key == {k: value[k] for k in key} for _, key, value in output), output[:2]  # keyed by window, group
    truth = ground_truth([(q, v) for q, _, v in records])
    assert combine([value for _, _, value in output]) == truth.rows
    shown = eventfleet("results", "--config", str(p.path), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert {(r["window_start"], r["campaign_id"], r["event_type"]): [r["events"], r["spend"], r["min_price"],
            r["max_price"]] for r in rows} == truth.rows  # fmt: skip


def _certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    cert, key = tmp_path / "registry.pem", tmp_path / "registry.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return str(cert), str(key)


@pytest.mark.parametrize("auth", ["basic", "bearer"])
def test_credentials_and_a_private_ca(
    kafka: Kafka, pipeline, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str
) -> None:
    """A registry behind HTTPS with a private CA that wants basic auth or a bearer token (a proxy
    in front of the real registry checks them): the right ones produce and aggregate exactly; a
    wrong one, or no CA, is one line at start-up."""
    import base64

    cert, key = _certificate(tmp_path)
    upstream = registry_url.split("/apis/")[0]
    if auth == "basic":
        header = "Basic " + base64.b64encode(b"fleet:s3cr3t").decode()
        right, wrong = 'username = "fleet"\npassword = "${EF_REGISTRY_SECRET}"', 'username = "fleet"\npassword = "x"'
        monkeypatch.setenv("EF_REGISTRY_SECRET", "s3cr3t")
    else:
        header = "Bearer tok-123"
        right, wrong = 'token = "${EF_REGISTRY_SECRET}"', 'token = "tok-999"'
        monkeypatch.setenv("EF_REGISTRY_SECRET", "tok-123")
    proxy = CountingProxy(upstream, authorization=header, tls=(cert, key))
    try:
        url = proxy.url + registry_url[len(upstream) :]
        p = pipeline(partitions=2, schema=f'registry = "{url}"\n{right}\nca_file = "{cert}"')
        produced = eventfleet("produce", "--config", str(p.path), "--count", "3000", "--start", "1800000000000")
        assert produced.returncode == 0, produced.stderr
        ends = kafka.ends(p.topic)
        p.start_worker()
        p.wait_caught_up(ends)
        assert p.stop_all() == [0]
        assert_exact(p, ground_truth([(q, v) for q, _, v in read_topic(kafka.bootstrap, p.topic, registry_url)]), ends)
        assert proxy.counts  # everything went through the proxy

        for schema, says in ((f'registry = "{url}"\n{wrong}\nca_file = "{cert}"', "refused the credentials"),
                             (f'registry = "{url}"\n{right}', "CERTIFICATE_VERIFY_FAILED")):  # fmt: skip
            bad = pipeline(partitions=1, schema=schema)
            r = eventfleet("check-config", "--config", str(bad.path))
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
    finally:
        proxy.close()
