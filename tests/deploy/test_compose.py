"""docker-compose.yml cannot run here (no Docker daemon): check its structure instead, against the
Compose specification's JSON schema and against the files, ports and names it ties together."""

import argparse
import ast
import fnmatch
import json
import re
import subprocess
import sys
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest
import yaml

from consumer import commands
from consumer.dev import registry as devregistry
from consumer.window import parse_duration_ms

from .conftest import ROOT, load_as_in_container

COMPOSE = ROOT / "docker-compose.yml"
PIPELINE_IN_CONTAINER = "/etc/eventfleet/pipeline.toml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _binds(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> host path in the repository."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("."):
            out[container] = ROOT / host
    return out


def _args(service: dict[str, Any], flag: str) -> str | None:
    argv = [*service.get("entrypoint", []), *service.get("command", [])]
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    jsonschema.validate(compose, json.loads(schema_file.read_text()))


def test_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "topic", "registry", "generator", "app", "tail", "fleet", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:"), "the official Apache Kafka image"
    for name, service in services.items():
        image = service["image"]
        if "build" in service:
            assert service["build"] == ".", f"{name} builds the repository's Dockerfile"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image} is not pinned to a version"
        assert re.match(r"^v?\d+\.\d+\.\d+$", tag), f"{name}: {image} is not pinned to a release"


def test_depends_on_targets_exist_and_their_conditions_can_be_met(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on", {})
        deps = deps if isinstance(deps, dict) else {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: it has no check"
            if spec["condition"] == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is a one-shot job"


def test_mounted_files_exist_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for container, host in _binds(service).items():
            assert host.exists(), f"{name} mounts {host.relative_to(ROOT)} at {container}: missing"


def test_the_fleets_pipeline_is_accepted_by_eventfleets_loader(compose: dict[str, Any], tmp_path: Path) -> None:
    fleet = compose["services"]["fleet"]
    binds = _binds(fleet)
    assert fleet.get("entrypoint") is None, (
        "the image's entrypoint: tini, eventfleet run --config " + PIPELINE_IN_CONTAINER
    )
    files = {c: h.read_text() for c, h in binds.items()}
    toml = tomllib.loads(files[PIPELINE_IN_CONTAINER])
    sink_dir = str(Path(toml["sink"]["path"]).parent)
    assert f"chown 10001:10001 {sink_dir}" in (ROOT / "Dockerfile").read_text(), "the image makes the sink folder"
    pipeline = load_as_in_container(files[PIPELINE_IN_CONTAINER], files, {}, (sink_dir,), tmp_path)
    assert pipeline.schema_path == tmp_path / "etc" / "eventfleet" / "schema.avsc"
    assert pipeline.schema_path.read_text() == (ROOT / "schemas" / "ad_event.avsc").read_text()
    # the generator produces for the same pipeline
    assert _binds(compose["services"]["generator"]) == binds
    assert _args(compose["services"]["generator"], "--config") == PIPELINE_IN_CONTAINER


def test_kafka_topic_and_workers_fit_together(compose: dict[str, Any]) -> None:
    services = compose["services"]
    toml = tomllib.loads(_binds(services["fleet"])[PIPELINE_IN_CONTAINER].read_text())
    host, port = toml["kafka"]["bootstrap_servers"].split(":")
    env = services["kafka"]["environment"]
    assert host == "kafka" and f"PLAINTEXT://kafka:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert _args(services["topic"], "--bootstrap-server") == f"kafka:{port}"
    assert _args(services["topic"], "--topic") == toml["kafka"]["topics"][0]
    partitions = int(_args(services["topic"], "--partitions") or 0)
    workers = int(_args(services["fleet"], "--workers") or 0)
    assert 1 <= workers <= partitions, "every worker can own a partition"


def test_prometheus_scrapes_the_fleet_and_grafana_gets_the_dashboard(compose: dict[str, Any]) -> None:
    services = compose["services"]
    toml = tomllib.loads(_binds(services["fleet"])[PIPELINE_IN_CONTAINER].read_text())
    port = toml.get("metrics", {}).get("port", 9400)
    assert _args(services["fleet"], "--metrics-port") is None
    assert f"{port}:{port}" in services["fleet"]["ports"]
    prometheus = yaml.safe_load(_binds(services["prometheus"])["/etc/prometheus/prometheus.yml"].read_text())
    targets = [t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"fleet:{port}", f"tail:{_args(services['tail'], '--metrics-port')}"]

    grafana = _binds(services["grafana"])
    dashboard = next(c for c, h in grafana.items() if h.name == "eventfleet.json")
    assert grafana[dashboard] == ROOT / "helm" / "eventfleet" / "dashboards" / "eventfleet.json", (
        "the chart's dashboard"
    )
    providers = yaml.safe_load((grafana["/etc/grafana/provisioning/dashboards"] / "eventfleet.yml").read_text())[
        "providers"
    ]
    assert any(dashboard.startswith(p["options"]["path"] + "/") for p in providers)
    datasources = yaml.safe_load((grafana["/etc/grafana/provisioning/datasources"] / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    assert "9090:9090" in services["prometheus"]["ports"]


def test_docker_stop_waits_for_the_last_flush(compose: dict[str, Any]) -> None:
    fleet = compose["services"]["fleet"]
    toml = tomllib.loads(_binds(fleet)[PIPELINE_IN_CONTAINER].read_text())
    needed_ms = parse_duration_ms(toml["flush"]["interval"]) + parse_duration_ms(
        toml.get("fleet", {}).get("shutdown_grace", "30s")
    )
    assert parse_duration_ms(fleet["stop_grace_period"]) > needed_ms


def _volumes(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Named volumes of a service: volume -> (container path, read-only)."""
    out = {}
    for volume in service.get("volumes", []):
        source, container, *mode = volume.split(":")
        if not source.startswith((".", "/")):
            out[source] = (container, "ro" in mode)
    return out


def test_the_tailer_reads_the_apps_log_volume_read_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app, tail = services["app"], services["tail"]
    [(volume, (app_dir, app_ro))] = _volumes(app).items()
    tail_dir, tail_ro = _volumes(tail)[volume]
    assert volume in compose["volumes"]
    assert not app_ro and tail_ro, "the app writes the logs; the tailer only reads them"
    # a new volume takes the owner of the first mount point it is mounted on: the app's, not the tailer's
    assert "app" in tail["depends_on"]
    # the app writes app.log in its working directory: the image's, the volume's mount point
    workdir = re.findall(r"^WORKDIR (\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert workdir[-1] == app_dir and 'open("app.log", "a")' in app["entrypoint"][2]
    toml = tomllib.loads(_binds(tail)[PIPELINE_IN_CONTAINER].read_text())
    ingest = toml["ingest"]
    assert [p for p in ingest["paths"] if fnmatch.fnmatch(f"{tail_dir}/app.log", p)], "[ingest] paths find app.log"
    assert all(p.startswith(tail_dir + "/") for p in ingest["paths"]), "every path is on the mounted volume"
    assert ingest["topic"] == _args(services["topic"], "--topic") == toml["kafka"]["topics"][0]
    assert ingest["format"] == "jsonl" and ingest["start"] in ("beginning", "end")
    schema = json.loads((ROOT / "schemas" / "ad_event.avsc").read_text())
    assert ingest["key"] in {f["name"] for f in schema["fields"]}
    # the default name derives from the host name, which compose changes on every recreate: the
    # positions of the files on the volume (which stays) would be lost, and every line read again
    assert re.fullmatch(r"[A-Za-z0-9._-]+", ingest.get("id", "")), "[ingest] id: a fixed tailer name"
    assert _binds(tail) == _binds(services["fleet"]), "the tailer and the fleet share one pipeline file"


def test_the_tailer_command_health_and_stop(compose: dict[str, Any]) -> None:
    tail = compose["services"]["tail"]
    argv = tail["entrypoint"]
    assert argv[:3] == ["tini", "--", "eventfleet"], "tini passes SIGTERM on: the tailer commits and exits 0"
    port = int(_args(tail, "--metrics-port") or 0)
    assert f"{port}:{port}" in tail["ports"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(tail["healthcheck"]["test"])
    assert port != tomllib.loads(_binds(tail)[PIPELINE_IN_CONTAINER].read_text())["metrics"]["port"]
    assert parse_duration_ms(tail["stop_grace_period"]) >= 20_000, "time to commit the last transaction"
    assert tail["restart"] == "unless-stopped"
    subcommands = next(a for a in commands.parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "tail" not in subcommands.choices:
        pytest.skip("eventfleet tail is not in this build yet (branch tail)")
    args = commands.parser().parse_args(argv[3:])
    assert (args.config, args.metrics_port) == (PIPELINE_IN_CONTAINER, port)


def test_the_app_writes_schema_valid_lines_with_partial_writes_and_rotates(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The stand-in app's script itself, run here (rotating every 1,000 lines instead of 100,000):
    every complete line is an event of the schema, numbered without a gap across the rotation."""
    script = compose["services"]["app"]["entrypoint"][2]
    ast.parse(script)
    assert "n % 100_000 == 0" in script
    argv = [sys.executable, "-c", script.replace("n % 100_000 == 0", "n % 1_000 == 0")]
    proc = subprocess.Popen(argv, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not ((tmp_path / "app.log.1").exists() and (tmp_path / "app.log").exists()):
            assert proc.poll() is None, "the writer exited"
            assert time.monotonic() < deadline, "no rotation within 60 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    rotated = (tmp_path / "app.log.1").read_text()
    # killed between the rename and the next write, there is no live file yet
    live = (tmp_path / "app.log").read_text() if (tmp_path / "app.log").exists() else ""
    assert rotated.endswith("\n"), "a rotated file ends with a complete line"
    lines = rotated.splitlines() + live.split("\n")[:-1]  # the live file's last line may be partial
    schema = fastavro.parse_schema(json.loads((ROOT / "schemas" / "ad_event.avsc").read_text()))
    numbers = []
    for line in lines:
        event = json.loads(line)
        assert fastavro.validate(event, schema), line
        numbers.append(int(event["event_id"].removeprefix("app-")))
    assert len(rotated.splitlines()) == 1_000
    assert numbers[0] % 1_000 == 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_the_registry_is_the_one_eventfleet_registry_runs(compose: dict[str, Any]) -> None:
    registry = compose["services"]["registry"]
    assert registry["image"] == f"apicurio/apicurio-registry:{devregistry.APICURIO_VERSION}", "Apicurio's image"
    port = registry["environment"]["QUARKUS_HTTP_PORT"]
    assert f"{devregistry.DEFAULT_PORT}:{port}" in registry["ports"], "the host port of `eventfleet registry up`"
    assert f"EVENTFLEET_REGISTRY_URL: http://registry:{port}{devregistry.CCOMPAT_PATH}" in COMPOSE.read_text()
