"""The chart's tailer (tail.*): off by default; a native sidecar of the app on a shared emptyDir
(ci/tail-sidecar-values.yaml), alone on a shared volume, or in another chart's pod through the
named templates. Every manifest is validated against the Kubernetes API; wrong values fail."""

import fnmatch
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import (
    CHART,
    KUBE_VERSION,
    assert_valid,
    container,
    fake_environ,
    helm,
    helm_binary,
    load_as_in_container,
    one,
    render,
    render_error,
    rendered_pipeline,
)

SIDECAR = "tail-sidecar-values.yaml"
TAIL_CONFIG = "/etc/eventfleet/pipeline.toml"


def _render_file(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    out = helm("template", "rel", ".", "--namespace", "fleet", "--kube-version", KUBE_VERSION, "-f", str(path))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = one(docs, "Deployment", "tail")["spec"]["template"]["spec"]
    return pod


def _tailer(pod: dict[str, Any]) -> dict[str, Any]:
    [tailer] = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "tail"]
    return tailer


def _mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def _ingest(docs: list[dict[str, Any]]) -> dict[str, Any]:
    ingest: dict[str, Any] = tomllib.loads(rendered_pipeline(docs)[0]).get("ingest", {})
    return ingest


def test_off_by_default() -> None:
    docs = render()
    assert not [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "tail"]
    assert _ingest(docs) == {}


def test_sidecar_shares_an_emptydir_with_the_app_and_outlives_it() -> None:
    docs = render(SIDECAR)
    deployment = one(docs, "Deployment", "tail")
    assert deployment["spec"]["replicas"] == 1, "one tailer per set of files"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two tailers on the same files"
    pod = _pod(docs)
    [tailer] = pod["initContainers"]
    assert tailer["name"] == "tail" and tailer["restartPolicy"] == "Always", "a native sidecar"
    [app] = pod["containers"]
    assert app["name"] == "app" and app["image"] == "registry.example.com/ad-server:2.4.1"
    logs = next(v for v in pod["volumes"] if v["name"] == "logs")
    assert logs == {"name": "logs", "emptyDir": {}}
    assert _mounts(app)["logs"]["mountPath"] == _mounts(tailer)["logs"]["mountPath"] == "/var/log/app"
    assert not _mounts(app)["logs"].get("readOnly"), "the app writes"
    assert _mounts(tailer)["logs"]["readOnly"] is True, "the tailer only reads"
    ingest = _ingest(docs)
    assert any(fnmatch.fnmatch("/var/log/app/app.log", p) for p in ingest["paths"]), "the app's --log-file"
    assert (ingest["key"], ingest["start"], ingest["topic"]) == ("campaign_id", "end", "ad-events")
    assert "id" not in ingest, "the pod's name: an emptyDir's files live no longer than the pod"


def test_the_tailer_runs_eventfleet_tail_like_the_fleet_runs() -> None:
    docs = render(SIDECAR)
    tailer, fleet = _tailer(_pod(docs)), container(docs)
    assert tailer["command"][:3] == ["tini", "--", "eventfleet"], "tini passes SIGTERM: commit, exit 0"
    argv = tailer["command"][3:]
    assert argv[argv.index("tail") + 1 :] == ["--config", TAIL_CONFIG, "--metrics-port", "9401"]
    assert tailer["ports"] == [{"name": "tail-metrics", "containerPort": 9401, "protocol": "TCP"}]
    assert _ingest(docs)["metrics_port"] == 9401
    assert tailer["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "tail-metrics"}
    assert tailer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "tail-metrics"}
    # the same pipeline file, environment (Kafka credentials) and hardening as the fleet
    assert tailer["image"] == fleet["image"]
    assert tailer["env"] == fleet["env"]
    assert tailer["securityContext"] == fleet["securityContext"]
    assert _mounts(tailer)["config"] == {"name": "config", "mountPath": "/etc/eventfleet", "readOnly": True}
    assert _mounts(tailer)["tail-tmp"]["mountPath"] == "/tmp"
    pod = _pod(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"] == fleet_configmap(docs)
    assert pod["terminationGracePeriodSeconds"] >= 10


def fleet_configmap(docs: list[dict[str, Any]]) -> str:
    name: str = next(d for d in docs if d["kind"] == "ConfigMap" and "pipeline.toml" in d["data"])["metadata"]["name"]
    return name


def test_the_fleet_and_the_tailer_never_select_each_others_pods() -> None:
    docs = render(SIDECAR)
    fleet, tail = one(docs, "Deployment"), one(docs, "Deployment", "tail")
    fleet_labels = fleet["spec"]["template"]["metadata"]["labels"]
    tail_labels = tail["spec"]["template"]["metadata"]["labels"]
    for selector in (fleet["spec"]["selector"]["matchLabels"], one(docs, "Service")["spec"]["selector"],
                     one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):  # fmt: skip
        assert selector.items() <= fleet_labels.items()
        assert not selector.items() <= tail_labels.items()
    assert tail["spec"]["selector"]["matchLabels"].items() <= tail_labels.items()
    assert not tail["spec"]["selector"]["matchLabels"].items() <= fleet_labels.items()


def test_alone_on_a_volume_the_writers_share(tmp_path: Path) -> None:
    values = {"tail": {"enabled": True, "volume": {"persistentVolumeClaim": {"claimName": "app-logs"}},
                       "paths": ["/logs/shop/*.log", "/logs/api/*.log"], "mountPath": "/logs"}}  # fmt: skip
    docs = _render_file(tmp_path, values)
    pod = _pod(docs)
    assert "initContainers" not in pod
    [tailer] = pod["containers"]
    assert tailer["name"] == "tail" and "restartPolicy" not in tailer
    assert next(v for v in pod["volumes"] if v["name"] == "logs")["persistentVolumeClaim"] == {"claimName": "app-logs"}
    assert _mounts(tailer)["logs"] == {"name": "logs", "mountPath": "/logs", "readOnly": True}
    ingest = _ingest(docs)
    assert ingest["paths"] == values["tail"]["paths"]
    assert ingest["id"] == "rel-eventfleet-tail", "a stable name: the files outlive the pod"
    assert_valid(docs)


def test_rendered_ingest_is_read_by_eventfleets_loader(tmp_path: Path) -> None:
    docs = render(SIDECAR)
    toml_text, avsc = rendered_pipeline(docs)
    pipeline = load_as_in_container(
        toml_text,
        {"/etc/eventfleet/pipeline.toml": toml_text, "/etc/eventfleet/schema.avsc": avsc},
        fake_environ(_tailer(_pod(docs))["env"]),
        (),
        tmp_path,
    )
    ingest = pipeline.ingest
    assert ingest is not None
    assert (ingest.topic, ingest.key, ingest.start, ingest.format) == ("ad-events", "campaign_id", "end", "jsonl")
    assert list(ingest.paths) == ["/var/log/app/*.log"]
    assert ingest.metrics_port == 9401


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("tail.enabled=true",), "nothing would write the files"),
        (("tail.enabled=true", "tail.app.name=app", "tail.app.image=x:1", "tail.paths={/var/log/*.log}"),
         'tail.paths "/var/log/*.log" is not under tail.mountPath "/var/log/app"'),
        (("tail.enabled=true", "tail.app.name=tail", "tail.app.image=x:1"), "the tailer's own container name"),
    ],
)  # fmt: skip
def test_values_that_would_tail_nothing_are_refused(sets: tuple[str, ...], message: str) -> None:
    assert message in render_error(None, *sets)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("tail.start=middle",), "/tail/start"),
        (("tail.format=csv",), "/tail/format"),
        (("tail.format=regex",), "/tail/pattern"),
        (("tail.paths={app.log}",), "/tail/paths/0"),
        (("tail.app.name=app",), "/tail/app"),
        (("tail.metricsPort=80",), "/tail/metricsPort"),
        (("tail.id=has space",), "/tail/id"),
        (("tail.typo=1",), "additional properties 'typo' not allowed"),
    ],
)
def test_wrong_tail_values_fail_through_the_schema(sets: tuple[str, ...], message: str) -> None:
    error = render_error(None, *sets)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


def test_another_chart_puts_the_tailer_in_its_own_pod(tmp_path: Path) -> None:
    """The named templates, as an application chart with eventfleet as a dependency uses them."""
    shop = tmp_path / "shop"
    (shop / "templates").mkdir(parents=True)
    shutil.copytree(CHART, shop / "charts" / "eventfleet")
    (shop / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n  - name: eventfleet\n    version: '>=0.0.0'\n"
    )
    (shop / "values.yaml").write_text(
        yaml.safe_dump({"eventfleet": {"tail": {"enabled": True, "deployment": False, "key": "campaign_id"}}})
    )
    (shop / "templates" / "deployment.yaml").write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      initContainers:
        {{- include "eventfleet.tailContainer" (dict "root" .Subcharts.eventfleet "sidecar" true) | trim | nindent 8 }}
      containers:
        - name: shop
          image: registry.example.com/shop:1.0.0
          volumeMounts:
            - {name: logs, mountPath: /var/log/app}
      volumes:
        {{- include "eventfleet.tailVolumes" .Subcharts.eventfleet | trim | nindent 8 }}
"""
    )
    out = subprocess.run(
        [str(helm_binary()), "template", "rel", str(shop), "--kube-version", KUBE_VERSION],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert_valid(docs)
    shop_pod = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "shop")
    pod = shop_pod["spec"]["template"]["spec"]
    tailer = _tailer(pod)
    assert tailer["restartPolicy"] == "Always" and tailer["image"] == "eventfleet:0.1.0"
    assert {v["name"] for v in pod["volumes"]} == {"config", "tail-tmp", "logs"}
    assert next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"] == "rel-eventfleet"
    assert not [d for d in docs if d["metadata"]["name"].endswith("-tail")], "tail.deployment false: no own Deployment"
    assert _ingest(docs)["key"] == "campaign_id", "the subchart's ConfigMap carries [ingest]"


def test_the_tailer_is_scraped_with_the_fleet() -> None:
    """metrics.serviceMonitor.enabled: a PodMonitor on the tailer's pod (it has no Service)."""
    assert not [d for d in render(SIDECAR) if d["kind"] == "PodMonitor"], "only with metrics.serviceMonitor"
    docs = render(SIDECAR, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    monitor = one(docs, "PodMonitor", "tail")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom", "the label the Prometheus selects on"
    pod_labels = one(docs, "Deployment", "tail")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    fleet_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= fleet_labels.items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in _tailer(_pod(docs))["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
