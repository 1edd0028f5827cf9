"""The local schema registry: `eventfleet registry up|status|down` on a real Apicurio Registry,
written to with Confluent's own client and serializer."""

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consumer.dev import postgres as devpostgres
from consumer.dev import registry as devregistry

from ..conftest import SchemaRegistry

pytestmark = pytest.mark.integration

V1 = {"type": "record", "name": "Click", "namespace": "t", "fields": [{"name": "id", "type": "int"}]}
V2 = {**V1, "fields": [{"name": "id", "type": "long"}, {"name": "page", "type": "string", "default": ""}]}
JSON = "application/vnd.schemaregistry.v1+json"


def eventfleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args], capture_output=True, text=True, timeout=300, env=env
    )


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": JSON})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def register(url: str, subject: str, schema: dict[str, Any]) -> int:
    schema_id: int = call(f"{url}/subjects/{subject}/versions", {"schema": json.dumps(schema)})["id"]
    return schema_id


def confluent_serde(url: str) -> tuple[AvroSerializer, AvroDeserializer]:
    """Confluent's serializer as a producer configures it against Apicurio: the topic strategy (the
    default strategy first asks /associations, which Apicurio does not serve), and a timeout."""
    client = SchemaRegistryClient({"url": url, "timeout": 10})
    conf = {"auto.register.schemas": True, "use.latest.version": False, "subject.name.strategy.type": "TOPIC"}
    serializer = AvroSerializer(client, json.dumps(V2), conf=conf)
    deserializer = AvroDeserializer(client, conf={"subject.name.strategy.type": "TOPIC"})
    return serializer, deserializer


def cli_args(port: int, management_port: int, home: Path) -> list[str]:
    return ["--port", str(port), "--management-port", str(management_port), "--dir", str(home)]


def test_up_status_down_up_keeps_the_schemas_by_id(tmp_path: Path) -> None:
    port, management_port = devpostgres.free_port(), devpostgres.free_port()
    args = cli_args(port, management_port, tmp_path / "registry")
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    try:
        up = eventfleet("registry", "up", *args)
        assert up.returncode == 0, up.stderr
        assert f"is up at {url} " in up.stdout
        again = eventfleet("registry", "up", *args)
        assert again.returncode == 0 and "was already running" in again.stdout

        status = eventfleet("registry", "status", *args)
        pid = devregistry.Registry(tmp_path / "registry", port).pid()
        assert status.returncode == 0 and status.stdout.startswith(f"running: {url} (pid {pid},")

        v1 = register(url, "clicks-value", V1)
        assert json.loads(call(f"{url}/schemas/ids/{v1}")["schema"]) == V1
        serializer, deserializer = confluent_serde(url)
        value = serializer({"id": 7, "page": "/home"}, SerializationContext("clicks", MessageField.VALUE))
        v2 = int.from_bytes(value[1:5], "big")
        assert value[0] == 0 and v2 != v1  # the Confluent frame: magic byte, then the schema id
        assert deserializer(value, SerializationContext("clicks", MessageField.VALUE)) == {"id": 7, "page": "/home"}
        latest = call(f"{url}/subjects/clicks-value/versions/latest")
        assert (latest["version"], latest["id"]) == (2, v2)

        down = eventfleet("registry", "down", *args)
        assert down.returncode == 0 and down.stdout.strip() == "stopped"
        status = eventfleet("registry", "status", *args)
        assert status.returncode == 1 and status.stdout.startswith("stopped:")
        with pytest.raises(urllib.error.URLError):
            call(f"{url}/subjects")

        up = eventfleet("registry", "up", *args)
        assert up.returncode == 0 and "is up at" in up.stdout, up.stderr
        assert json.loads(call(f"{url}/schemas/ids/{v1}")["schema"]) == V1
        assert json.loads(call(f"{url}/schemas/ids/{v2}")["schema"]) == V2
        assert call(f"{url}/subjects/clicks-value/versions/latest")["id"] == v2
        assert register(url, "clicks-value", V1) == v1  # known schemas keep their ids
        _, deserializer = confluent_serde(url)
        assert deserializer(value, SerializationContext("clicks", MessageField.VALUE)) == {"id": 7, "page": "/home"}
    finally:
        eventfleet("registry", "down", *args)
    assert devregistry.Registry(tmp_path / "registry", port).pid() is None


def test_status_and_down_of_a_stopped_registry(tmp_path: Path) -> None:
    port = devpostgres.free_port()
    args = cli_args(port, devpostgres.free_port(), tmp_path / "registry")
    status = eventfleet("registry", "status", *args)
    assert status.returncode == 1
    assert status.stdout.startswith(f"stopped: nothing answers at http://127.0.0.1:{port}/apis/ccompat/v7")
    down = eventfleet("registry", "down", *args)
    assert down.returncode == 0 and "no registry of ours is running" in down.stdout


@pytest.mark.parametrize("which", ["port", "management port"])
def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path, which: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        free = devpostgres.free_port()
        port, management_port = (taken, free) if which == "port" else (free, taken)
        up = eventfleet("registry", "up", *cli_args(port, management_port, tmp_path / "registry"))
    assert up.returncode == 2 and up.stdout == ""
    assert up.stderr.count("\n") == 1 and up.stderr.startswith("eventfleet: ")
    assert f"{which} 127.0.0.1:{taken} is taken" in up.stderr
    assert not (tmp_path / "registry").exists()


def test_no_maven_to_download_with_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "EVENTFLEET_CACHE": str(tmp_path / "cache")}
    port = devpostgres.free_port()
    up = eventfleet("registry", "up", *cli_args(port, devpostgres.free_port(), tmp_path / "registry"), env=env)
    assert up.returncode == 2 and up.stderr.count("\n") == 1
    assert up.stderr.startswith("eventfleet: 'mvn' is not on the PATH") and "apt-get install maven" in up.stderr


def test_the_session_registry_stops_and_starts_with_its_schemas(registry_server: SchemaRegistry) -> None:
    registry_server.restartable()
    url = registry_server.url
    serializer, _ = confluent_serde(url)
    value = serializer({"id": 1, "page": "/"}, SerializationContext("restarts", MessageField.VALUE))
    schema_id = int.from_bytes(value[1:5], "big")
    registry_server.stop()
    with pytest.raises(urllib.error.URLError):
        call(f"{url}/schemas/ids/{schema_id}")
    registry_server.start()
    assert json.loads(call(f"{url}/schemas/ids/{schema_id}")["schema"]) == V2
    _, deserializer = confluent_serde(url)
    assert deserializer(value, SerializationContext("restarts", MessageField.VALUE)) == {"id": 1, "page": "/"}
