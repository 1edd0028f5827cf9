"""Kafka authentication: MSK IAM tokens through librdkafka's OAUTHBEARER callback, SCRAM and TLS.

The MSK IAM tests sign real tokens with the real signer (aws-msk-iam-sasl-signer-python) from
fake static credentials in the environment: signing is local, so no AWS endpoint is contacted,
and the librdkafka clients point at a closed loopback port.
"""

import base64
import copy
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import tomli_w
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from consumer import auth, kafkalog
from consumer.config import Pipeline, load
from consumer.errors import ConfigError
from consumer.source import consumer_settings
from tests.test_config import BASE

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example credentials
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WAIT_S = 60.0  # generous: the machine is shared


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Static fake credentials and nothing else the AWS credential chain could reach for."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_REGION", "AWS_DEFAULT_REGION"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: clients try, fail to connect, and retry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pipeline(tmp_path: Path, **kafka: Any) -> Pipeline:
    doc = copy.deepcopy(BASE)
    doc["kafka"].update(kafka)
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


def _decode(token: str) -> tuple[str, dict[str, str]]:
    """An MSK IAM token -> (the presigned URL's host, its query parameters)."""
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    assert parts.scheme == "https"
    return parts.netloc, {k: v[0] for k, v in parse_qs(parts.query).items()}


def _assert_connect_token(token: str, region: str) -> dict[str, str]:
    host, query = _decode(token)
    assert host == f"kafka.{region}.amazonaws.com"
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    key, _day, signed_region, service, _ = query["X-Amz-Credential"].split("/")
    assert (key, signed_region, service) == (ACCESS_KEY, region, "kafka-cluster")
    assert len(query["X-Amz-Signature"]) == 64
    return query


# ---------------------------------------------------------------------------------------------
# the token callback


def test_callback_returns_a_signed_connect_token_with_a_future_expiry(aws_env: None) -> None:
    before = time.time()
    token, expiry_s = auth.MskIamToken("eu-west-1")(None)
    _assert_connect_token(token, "eu-west-1")
    assert isinstance(expiry_s, float)
    # librdkafka wants epoch seconds (the signer gives ms): a token valid for minutes, not years.
    assert before + 60 < expiry_s < before + 3600


def test_a_later_call_signs_a_fresh_token(aws_env: None) -> None:
    callback = auth.MskIamToken("us-east-1")
    first, first_expiry = callback(None)
    time.sleep(1.1)  # the signature covers the signing time, to the second
    second, second_expiry = callback(None)
    assert second != first
    assert second_expiry > first_expiry
    assert _assert_connect_token(second, "us-east-1")["X-Amz-Date"] > _decode(first)[1]["X-Amz-Date"]


@pytest.mark.allow_logged_errors
def test_missing_credentials_are_logged_with_the_cause(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(Exception), caplog.at_level(logging.ERROR):  # noqa: B017 (botocore's own type)
        auth.MskIamToken("eu-west-1")(None)
    assert "cannot sign an MSK IAM token for region eu-west-1" in caplog.text


# ---------------------------------------------------------------------------------------------
# every client of the pipeline gets the callback


def test_client_settings_wire_the_callback(aws_env: None, tmp_path: Path) -> None:
    p = _pipeline(tmp_path, auth="msk-iam", region="ap-southeast-2")
    for settings in (p.kafka.client_settings(), consumer_settings(p)):
        assert settings["security.protocol"] == "SASL_SSL"
        assert settings["sasl.mechanisms"] == "OAUTHBEARER"
        callback = settings["oauth_cb"]
        assert isinstance(callback, auth.MskIamToken)
        _assert_connect_token(callback(None)[0], "ap-southeast-2")


class _Recorder:
    """Wraps the pipeline's callback: records each token; ``lifetime_s`` shortens its expiry so
    that librdkafka's refresh (at 80% of the lifetime) comes within the test."""

    def __init__(self, callback: Any, lifetime_s: float | None = None) -> None:
        self.callback, self.lifetime_s = callback, lifetime_s
        self.tokens: list[str] = []
        self.changed = threading.Condition()

    def __call__(self, config: str | None) -> tuple[str, float]:
        token, expiry_s = self.callback(config)
        with self.changed:
            self.tokens.append(token)
            self.changed.notify_all()
        return token, (time.time() + self.lifetime_s) if self.lifetime_s else expiry_s

    def wait_for(self, count: int, poll: Any = None) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        while len(self.tokens) < count and time.monotonic() < deadline:
            if poll is not None:
                poll(0.1)  # before confluent-kafka 2.13 only a poll served the callback
            with self.changed:
                self.changed.wait(0.2)
        assert len(self.tokens) >= count, f"oauth_cb called {len(self.tokens)} times, expected {count}"
        return list(self.tokens)


def _expected(_error: Any) -> None:
    """Connection refused: expected, nothing listens on the port (the worker would log it)."""


def _client(kind: str, p: Pipeline, recorder: _Recorder) -> Any:
    # The three kinds of client eventfleet creates: the consumer (source.Source), the producer
    # (dlq.DeadLetters, produce.produce) and the admin client (check_topics, dead-letter topics).
    if kind == "consumer":
        return Consumer({**consumer_settings(p), "oauth_cb": recorder, "error_cb": _expected})
    if kind == "producer":
        return Producer({**p.kafka.client_settings(), "oauth_cb": recorder})
    return AdminClient({**p.kafka.client_settings(), "oauth_cb": recorder})


@pytest.mark.parametrize("kind", ["consumer", "producer", "admin"])
def test_real_clients_call_the_callback(aws_env: None, tmp_path: Path, closed_port: int, kind: str) -> None:
    p = _pipeline(tmp_path, bootstrap_servers=f"127.0.0.1:{closed_port}", auth="msk-iam", region="eu-central-1")
    recorder = _Recorder(p.kafka.client_settings()["oauth_cb"])
    client = _client(kind, p, recorder)
    try:
        tokens = recorder.wait_for(1, getattr(client, "poll", None))
        _assert_connect_token(tokens[0], "eu-central-1")
    finally:
        if isinstance(client, Consumer):
            client.close()


def test_librdkafka_refreshes_the_token_before_it_expires(aws_env: None, tmp_path: Path, closed_port: int) -> None:
    p = _pipeline(tmp_path, bootstrap_servers=f"127.0.0.1:{closed_port}", auth="msk-iam", region="eu-west-3")
    settings = consumer_settings(p)
    recorder = _Recorder(settings["oauth_cb"], lifetime_s=3.0)
    consumer = Consumer({**settings, "oauth_cb": recorder, "error_cb": _expected})
    try:
        consumer.poll(0.1)
        tokens = recorder.wait_for(3, consumer.poll)
    finally:
        consumer.close()
    assert len(set(tokens)) == len(tokens), "each refresh signs a new token"
    for token in tokens:
        _assert_connect_token(token, "eu-west-3")


# ---------------------------------------------------------------------------------------------
# configuration


def test_region_comes_from_the_environment(aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    assert _pipeline(tmp_path, auth="msk-iam").kafka.region == "sa-east-1"
    monkeypatch.setenv("AWS_REGION", "eu-north-1")  # the SDKs' order: AWS_REGION first
    assert _pipeline(tmp_path, auth="msk-iam").kafka.region == "eu-north-1"
    assert _pipeline(tmp_path, auth="msk-iam", region="us-west-2").kafka.region == "us-west-2"


def test_no_region_is_a_config_error(aws_env: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, auth="msk-iam")
    assert info.value.key == "kafka.region"
    assert "AWS_REGION" in str(info.value)


def test_msk_iam_without_the_signer_names_the_extra(
    aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "SIGNER_PACKAGE", "eventfleet_no_such_package")
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, auth="msk-iam", region="eu-west-1")
    assert info.value.key == "kafka.auth"
    assert "pip install 'eventfleet[msk]'" in str(info.value)


@pytest.mark.parametrize(
    ("kafka", "key"),
    [
        ({"auth": "kerberos"}, "kafka.auth"),
        ({"auth": "msk-iam", "region": "eu-west-1", "tls": False}, "kafka.tls"),
        (
            {"auth": "msk-iam", "region": "eu-west-1", "config": {"sasl.mechanism": "PLAIN"}},
            "kafka.config.sasl.mechanism",
        ),
        (
            {"auth": "scram-sha-512", "username": "u", "password": "p", "config": {"security.protocol": "SSL"}},
            "kafka.config.security.protocol",
        ),
        ({"auth": "scram-sha-512", "username": "u"}, "kafka.password"),
        ({"auth": "scram-sha-256", "username": "u", "password": "${EVENTFLEET_TEST_UNSET}"}, "kafka.password"),
        ({"username": "u"}, "kafka.username"),
        ({"region": "eu-west-1"}, "kafka.region"),
        ({"tls": "yes"}, "kafka.tls"),
        ({"tls": True, "ca_file": "missing.pem"}, "kafka.ca_file"),
        ({"ca_file": "pipeline.toml"}, "kafka.ca_file"),  # exists, but TLS is off
    ],
)
def test_auth_mistakes_name_the_key(aws_env: None, tmp_path: Path, kafka: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, **kafka)
    assert info.value.key == key


def test_scram_reads_secrets_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTFLEET_TEST_USER", "fleet")
    monkeypatch.setenv("EVENTFLEET_TEST_PASSWORD", "s3cr3t")
    p = _pipeline(tmp_path, auth="scram-sha-512", username="${EVENTFLEET_TEST_USER}",
                  password="${EVENTFLEET_TEST_PASSWORD}")  # fmt: skip
    hooks = kafkalog.client_hooks()  # logs and errors through logging: the same in every client's settings
    assert {k: v for k, v in p.kafka.client_settings().items() if k not in hooks} == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "fleet",
        "sasl.password": "s3cr3t",
    }
    assert "s3cr3t" not in repr(p.kafka)
    plain = _pipeline(tmp_path, auth="scram-sha-256", username="u", password="p", tls=False)
    assert plain.kafka.client_settings()["security.protocol"] == "SASL_PLAINTEXT"
    assert plain.kafka.client_settings()["sasl.mechanisms"] == "SCRAM-SHA-256"


def test_tls_without_sasl(tmp_path: Path) -> None:
    assert "security.protocol" not in _pipeline(tmp_path).kafka.client_settings()
    (tmp_path / "ca.pem").write_text("placeholder", encoding="utf-8")
    p = _pipeline(tmp_path, tls=True, ca_file="ca.pem")
    assert p.kafka.client_settings()["security.protocol"] == "SSL"
    assert p.kafka.client_settings()["ssl.ca.location"] == str(tmp_path / "ca.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a CA")
def test_librdkafka_loads_the_ca_file(tmp_path: Path, closed_port: int) -> None:
    """The settings reach librdkafka: it loads a real CA, and refuses a file that is not one."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=eventfleet-test",
         "-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "bad.pem").write_text("not a certificate\n", encoding="utf-8")
    common = {
        "bootstrap_servers": f"127.0.0.1:{closed_port}",
        "auth": "scram-sha-512",
        "username": "u",
        "password": "p",
    }
    good = _pipeline(tmp_path, **common, ca_file="ca.pem")
    Producer(good.kafka.client_settings()).flush(0)
    bad = _pipeline(tmp_path, **common, ca_file="bad.pem")
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location"):
        Producer(bad.kafka.client_settings())


# ---------------------------------------------------------------------------------------------
# the pipeline and schema from environment variables (ECS: SSM parameters injected as env)


def test_pipeline_and_schema_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: None
) -> None:
    doc = copy.deepcopy(BASE)
    doc["schema"]["path"] = "env:EVENTFLEET_TEST_SCHEMA"
    doc["kafka"].update(auth="msk-iam", region="eu-west-1")
    doc["sink"]["path"] = "out.db"
    monkeypatch.setenv("EVENTFLEET_TEST_PIPELINE", tomli_w.dumps(doc))
    monkeypatch.setenv("EVENTFLEET_TEST_SCHEMA", Path(BASE["schema"]["path"]).read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    p = load("env:EVENTFLEET_TEST_PIPELINE")
    assert str(p.source) == "env:EVENTFLEET_TEST_PIPELINE"  # what the supervisor passes to its workers
    assert p.schema["name"] == "AdEvent"
    assert p.field_types["ts"] == "long"
    assert p.sink.path.resolve() == (tmp_path / "out.db").resolve()  # relative to the working directory
    assert p.kafka.auth == "msk-iam"


@pytest.mark.parametrize(
    ("env", "source", "key"),
    [
        ({}, "env:EVENTFLEET_TEST_PIPELINE", "--config"),
        ({"EVENTFLEET_TEST_PIPELINE": "  "}, "env:EVENTFLEET_TEST_PIPELINE", "--config"),
        ({}, "env:not a name", "--config"),
        ({"EVENTFLEET_TEST_PIPELINE": "[kafka"}, "env:EVENTFLEET_TEST_PIPELINE", "env:EVENTFLEET_TEST_PIPELINE"),
    ],
)
def test_pipeline_from_the_environment_mistakes(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], source: str, key: str
) -> None:
    monkeypatch.delenv("EVENTFLEET_TEST_PIPELINE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load(source)
    assert info.value.key == key


def test_schema_from_the_environment_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = copy.deepcopy(BASE)
    doc["schema"]["path"] = "env:EVENTFLEET_TEST_SCHEMA"
    path = tmp_path / "pipeline.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    monkeypatch.delenv("EVENTFLEET_TEST_SCHEMA", raising=False)
    with pytest.raises(ConfigError, match="EVENTFLEET_TEST_SCHEMA is not set") as info:
        load(path)
    assert info.value.key == "schema.path"
    monkeypatch.setenv("EVENTFLEET_TEST_SCHEMA", '{"type": "string"}')
    with pytest.raises(ConfigError, match="not a valid Avro record schema") as info:
        load(path)
    assert info.value.key == "schema.path"


def test_bootstrap_servers_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Terraform module hands the cluster's brokers to the task as EVENTFLEET_BOOTSTRAP_SERVERS."""
    monkeypatch.setenv("EVENTFLEET_BOOTSTRAP_SERVERS", "b-1.example:9098,b-2.example:9098")
    p = _pipeline(tmp_path, bootstrap_servers="${EVENTFLEET_BOOTSTRAP_SERVERS}")
    assert p.kafka.bootstrap_servers == "b-1.example:9098,b-2.example:9098"
    assert p.kafka.client_settings()["bootstrap.servers"] == "b-1.example:9098,b-2.example:9098"
    monkeypatch.delenv("EVENTFLEET_BOOTSTRAP_SERVERS")
    with pytest.raises(ConfigError, match="EVENTFLEET_BOOTSTRAP_SERVERS, which is not set") as info:
        _pipeline(tmp_path, bootstrap_servers="${EVENTFLEET_BOOTSTRAP_SERVERS}")
    assert info.value.key == "kafka.bootstrap_servers"


def test_the_documented_auth_examples_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_env: None) -> None:
    """The MSK IAM, SCRAM and TLS examples of docs/configuration.md are pipelines eventfleet accepts."""
    import re

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = doc[doc.index("\n## Authentication") :].split("\n## ")[1]  # up to the next section
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    rest = tomli_w.dumps({k: v for k, v in BASE.items() if k != "kafka"})
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("placeholder", encoding="utf-8")
    monkeypatch.setenv("KAFKA_PASSWORD", "from-the-environment")
    got = []
    for block in blocks:
        path = tmp_path / "pipeline.toml"
        path.write_text(block + "\n" + rest, encoding="utf-8")
        got.append(load(path).kafka.client_settings())
    assert (got[0]["sasl.mechanisms"], got[0]["security.protocol"]) == ("OAUTHBEARER", "SASL_SSL")
    assert isinstance(got[0]["oauth_cb"], auth.MskIamToken) and got[0]["oauth_cb"].region == "eu-west-1"
    assert (got[1]["sasl.mechanisms"], got[1]["sasl.password"]) == ("SCRAM-SHA-512", "from-the-environment")
    assert got[1]["ssl.ca.location"] == str(tmp_path / "certs" / "ca.pem")
    assert (got[2]["security.protocol"], got[2]["ssl.certificate.location"]) == ("SSL", "certs/client.pem")
