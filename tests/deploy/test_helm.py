"""The Helm chart helm/eventfleet: lint, render for several value sets, validate every manifest
against the Kubernetes API schemas, and load the rendered pipeline with eventfleet's own loader."""

import json
import math
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.errors import ConfigError
from consumer.window import parse_duration_ms

from .conftest import (
    CHART,
    KUBE_VERSION,
    ROOT,
    VALUE_SETS,
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
    secret_files,
    value_args,
)
from .test_terraform import _module, _policy_statements

# Custom resources: not in the Kubernetes API schemas, checked structurally below instead.
CRD_KINDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
}


def _id(values: str | None) -> str:
    return values or "defaults"


@pytest.mark.parametrize("values", VALUE_SETS, ids=_id)
def test_helm_lint_strict(values: str | None) -> None:
    result = helm("lint", "--strict", ".", "--kube-version", KUBE_VERSION, *value_args(values))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("values", VALUE_SETS, ids=_id)
def test_every_manifest_is_valid_for_the_kubernetes_api(values: str | None) -> None:
    docs = render(values)
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"):
        assert kind in kinds, f"{kind} missing from {kinds}"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == CRD_KINDS[doc["kind"]]
            continue  # validated by test_custom_resources_are_well_formed
        # strict: an unknown field (a typo in a template) fails too
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", VALUE_SETS, ids=_id)
def test_custom_resources_are_well_formed(values: str | None) -> None:
    docs = render(values)
    deployment = one(docs, "Deployment")
    service = one(docs, "Service")
    toml = tomllib.loads(rendered_pipeline(docs)[0])
    for so in (d for d in docs if d["kind"] == "ScaledObject"):
        spec = so["spec"]
        assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                             "cooldownPeriod", "triggers", "advanced", "fallback", "idleReplicaCount"}  # fmt: skip
        assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert isinstance(spec["minReplicaCount"], int) and isinstance(spec["maxReplicaCount"], int)
        assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        [trigger] = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata is a map of strings"
        assert meta["bootstrapServers"] == toml["kafka"]["bootstrap_servers"]
        assert meta["consumerGroup"] == toml["kafka"]["group_id"]
        if len(toml["kafka"]["topics"]) == 1:
            assert meta["topic"] == toml["kafka"]["topics"][0]
        assert int(meta["lagThreshold"]) > 0
        if "authenticationRef" in trigger:
            ref = trigger["authenticationRef"]["name"]
            assert ref in {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    for ta in (d for d in docs if d["kind"] == "TriggerAuthentication"):
        refs = ta["spec"]["secretTargetRef"]
        assert {r["parameter"] for r in refs} >= {"username", "password"}
        assert all(set(r) == {"parameter", "name", "key"} for r in refs)
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items(), "the ServiceMonitor selects the Service"
        [endpoint] = sm["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize("values", VALUE_SETS, ids=_id)
def test_rendered_pipeline_is_accepted_by_eventfleets_loader(values: str | None, tmp_path: Path) -> None:
    docs = render(values)
    toml_text, avsc = rendered_pipeline(docs)
    c = container(docs)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/etc/eventfleet" in mounts, "the ConfigMap is mounted where the image's entrypoint reads it"
    assert c["command"][-2:] == ["--config", "/etc/eventfleet/pipeline.toml"]
    env = fake_environ(c.get("env", []))
    # every ${NAME} the file reads is set by the container spec
    for name in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", toml_text):
        assert name in env, f"pipeline.toml reads ${{{name}}} but the container does not set {name}"
    writable = tuple(p for p, m in mounts.items() if not m.get("readOnly"))
    files = {"/etc/eventfleet/pipeline.toml": toml_text, "/etc/eventfleet/schema.avsc": avsc, **secret_files(docs)}
    pipeline = load_as_in_container(toml_text, files, env, writable, tmp_path)
    assert pipeline.schema_path == tmp_path / "etc" / "eventfleet" / "schema.avsc"
    assert pipeline.metrics_port == c["ports"][0]["containerPort"]
    if pipeline.sink.type == "sqlite":
        assert any(str(pipeline.sink.path).startswith(str(tmp_path) + p + "/") for p in writable), (
            "the SQLite file is on a writable volume"
        )


def _seconds(text: str) -> float:
    return parse_duration_ms(text) / 1000


@pytest.mark.parametrize("values", VALUE_SETS, ids=_id)
def test_termination_grace_outlasts_the_last_flush_and_the_shutdown_grace(values: str | None) -> None:
    docs = render(values)
    toml = tomllib.loads(rendered_pipeline(docs)[0])
    needed = _seconds(toml["flush"]["interval"]) + _seconds(toml.get("fleet", {}).get("shutdown_grace", "30s"))
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > needed


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("flush.interval=90s", "fleet.shutdownGrace=2m"), 90 + 120 + 15),
        (("flush.interval=500ms", "fleet.shutdownGrace=10s"), 11 + 15),
        (("flush.interval=1h", "fleet.shutdownGrace=0s"), 3600 + 15),
        (("terminationGracePeriodSeconds=36",), 36),
    ],
)
def test_termination_grace_is_derived_from_the_durations(sets: tuple[str, ...], expected: int) -> None:
    docs = render(None, *sets)
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == expected


@pytest.mark.parametrize(
    ("cpu", "workers"),
    [("250m", 1), ("1000m", 1), ("1001m", 2), ("1500m", 2), ("1", 1), ("2.5", 3), ("4", 4)],
)
def test_workers_per_pod_follow_the_cpu_request(cpu: str, workers: int) -> None:
    docs = render(None, f"resources.requests.cpu={cpu}")
    args = container(docs)["args"]
    assert args == ["--workers", str(workers)]


def test_workers_can_be_set_explicitly() -> None:
    docs = render(None, "workers=6", "resources.requests.cpu=1")
    assert container(docs)["args"] == ["--workers", "6"]


@pytest.mark.parametrize(
    ("partitions", "cpu", "max_pods"),
    [(8, "1", 8), (8, "3", 3), (12, "3", 4), (7, "2", 4), (1, "4", 1), (48, "2", 24)],
)
def test_keda_ceiling_is_the_partitions_over_the_workers_per_pod(partitions: int, cpu: str, max_pods: int) -> None:
    docs = render(None, "keda.enabled=true", f"kafka.partitions={partitions}", f"resources.requests.cpu={cpu}")
    so = one(docs, "ScaledObject")
    workers = int(container(docs)["args"][1])
    top = so["spec"]["maxReplicaCount"]
    assert top == max_pods
    assert top <= partitions
    # enough pods that every partition can have its own worker, and not a pod more
    assert top * workers >= partitions
    assert (top - 1) * workers < partitions
    assert "replicas" not in one(docs, "Deployment")["spec"], "the autoscaler owns the replica count"


def test_hpa_on_cpu_has_the_same_ceiling() -> None:
    docs = render("msk-iam-values.yaml")  # 16 partitions, 4 workers per pod
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 4
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(docs, "Deployment")["spec"]


def test_keda_values_set_ceiling_is_below_the_partitions() -> None:
    docs = render("keda-monitoring-values.yaml")
    toml = tomllib.loads(rendered_pipeline(docs)[0])
    values = yaml.safe_load((CHART / "ci" / "keda-monitoring-values.yaml").read_text())
    so = one(docs, "ScaledObject")
    assert so["spec"]["maxReplicaCount"] <= values["kafka"]["partitions"]
    assert so["spec"]["maxReplicaCount"] == math.ceil(values["kafka"]["partitions"] / int(container(docs)["args"][1]))
    assert so["spec"]["triggers"][0]["metadata"]["consumerGroup"] == toml["kafka"]["group_id"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("workers=two",), "/workers"),
        (("workers=0",), "/workers"),
        (("replicaCount=-1",), "/replicaCount"),
        (("kafka.partitions=0",), "/kafka/partitions"),
        (("window.size=1min",), "/window/size"),
        (("flush.interval=5",), "/flush/interval"),
        (("sink.type=mysql",), "/sink/type"),
        (("kafka.auth=iam",), "/kafka/auth"),
        (("kafka.typo=1",), "additional properties 'typo' not allowed"),
        (("aggregate.metrics.avg_price=avg:price_micros",), "/aggregate/metrics/avg_price"),
        (("resources.requests.cpu=lots",), "/resources/requests/cpu"),
        (("kafka.config.enable\\.auto\\.commit=false",), "/kafka/config/enable.auto.commit"),
        (("serviceAccount.roleArn=eventfleet-role",), "/serviceAccount/roleArn"),
        (("keda.enabled=true", "autoscaling.enabled=true"), "/autoscaling/enabled"),
        (("sink.type=sqlite", "replicaCount=2"), "/replicaCount"),
        (("sink.type=kafka",), "/sink/kafka/topic"),
        (("kafka.auth=msk-iam",), "/kafka/region"),
        (("kafka.sasl.mechanism=PLAIN",), "/kafka/sasl/existingSecret"),
        (("glue.registryName=my registry",), "/glue/registryName"),
        (("glue.region=Ireland",), "/glue/region"),
        (("registry.url=https://sr.example.com", "registry.auth=basic"), "/registry/existingSecret"),
        (("registry.url=https://sr.example.com", "registry.auth=oauth"), "/registry/auth"),
        (("registry.url=sr.example.com:8081",), "/registry/url"),
    ],
)
def test_wrong_values_fail_lint_and_install_through_the_schema(sets: tuple[str, ...], message: str) -> None:
    error = render_error(None, *sets)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error
    lint = helm("lint", "--strict", ".", *value_args(None, sets), check=False)
    assert lint.returncode != 0 and message in lint.stdout + lint.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("keda.enabled=true", "keda.maxReplicaCount=9"),
            "keda.maxReplicaCount=9 is more than ceil(kafka.partitions / workers) = ceil(8 / 1) = 8",
        ),
        (
            ("autoscaling.enabled=true", "autoscaling.maxReplicas=20", "workers=2"),
            "autoscaling.maxReplicas=20 is more than ceil(kafka.partitions / workers) = ceil(8 / 2) = 4",
        ),
        (("terminationGracePeriodSeconds=35",), "must be more than flush.interval + fleet.shutdownGrace (35 s)"),
        (
            ("flush.interval=1m", "terminationGracePeriodSeconds=60"),
            "must be more than flush.interval + fleet.shutdownGrace (90 s)",
        ),
        (
            ("kafka.tls.enabled=true", "kafka.config.security\\.protocol=SSL"),
            "kafka.config.security.protocol is set by the chart",
        ),
        (("registry.caSecret=sr-ca",), "registry.auth, registry.caSecret and registry.subject need registry.url"),
        (
            ("registry.url=https://sr.example.com", "registry.existingSecret=sr"),
            "registry.existingSecret is set but registry.auth is empty",
        ),
        (("glue.enabled=true", "registry.url=https://sr.example.com"), "glue.enabled and registry.url are both set"),
    ],
)
def test_wrong_combinations_fail_at_install_time(sets: tuple[str, ...], message: str) -> None:
    """Arithmetic across values is beyond JSON Schema: the templates refuse these (helm template and
    install; helm lint renders leniently and does not run them)."""
    assert message in render_error(None, *sets)


def test_secrets_are_referenced_never_rendered() -> None:
    docs = render("postgres-sasl-values.yaml")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "eventfleet-postgres", "key": "password"}
    assert env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials", "key": "username"}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials", "key": "password"}
    assert env["PGHOST"]["value"].endswith(".rds.amazonaws.com")
    toml = tomllib.loads(rendered_pipeline(docs)[0])
    cfg = toml["kafka"]["config"]
    assert cfg["security.protocol"] == "SASL_SSL"
    assert cfg["sasl.mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl.username"] == "${KAFKA_SASL_USERNAME}"
    assert cfg["sasl.password"] == "${KAFKA_SASL_PASSWORD}"
    assert cfg["ssl.ca.location"] == "/etc/kafka-tls/ca/ca.crt"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    ca = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
    assert ca["secret"] == {"secretName": "kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart creates no Secret: it references existing ones"


def test_registry_url_and_basic_credentials_from_a_secret(tmp_path: Path) -> None:
    docs = render("registry-values.yaml")
    c = container(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["EVENTFLEET_REGISTRY_URL"]["value"] == "https://psrc-12345.eu-west-1.aws.confluent.cloud"
    secret = "schema-registry-credentials"
    assert env["EVENTFLEET_REGISTRY_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "username"}
    assert env["EVENTFLEET_REGISTRY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "password"}
    assert "EVENTFLEET_REGISTRY_TOKEN" not in env
    toml_text, avsc = rendered_pipeline(docs)
    assert tomllib.loads(toml_text)["schema"] == {
        "path": "schema.avsc",
        "decoder": "fastavro",
        "registry": "${EVENTFLEET_REGISTRY_URL}",
        "subject": "ad-events-value",
        "username": "${EVENTFLEET_REGISTRY_USERNAME}",
        "password": "${EVENTFLEET_REGISTRY_PASSWORD}",
        "ca_file": "/etc/registry-tls/ca.crt",
    }
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    ca = next(v for v in pod["volumes"] if v["name"] == "registry-ca")
    assert ca["secret"] == {"secretName": "schema-registry-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart creates no Secret: it references existing ones"
    # what the worker reads: the URL and credentials of the Secret, the CA file of its volume
    files = {"/etc/eventfleet/pipeline.toml": toml_text, "/etc/eventfleet/schema.avsc": avsc, **secret_files(docs)}
    pipeline = load_as_in_container(toml_text, files, fake_environ(c["env"]), (), tmp_path)
    registry = pipeline.registry
    assert registry is not None and registry.url == "https://psrc-12345.eu-west-1.aws.confluent.cloud"
    assert (registry.username, registry.password) == (f"secret-{secret}-username", f"secret-{secret}-password")
    assert registry.token is None and registry.ca_file == tmp_path / "etc" / "registry-tls" / "ca.crt"


def test_registry_bearer_token_from_a_secret() -> None:
    docs = render(None, "registry.url=https://sr.example.com", "registry.auth=bearer", "registry.existingSecret=sr")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["EVENTFLEET_REGISTRY_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sr", "key": "token"}
    assert "EVENTFLEET_REGISTRY_USERNAME" not in env and "EVENTFLEET_REGISTRY_PASSWORD" not in env
    schema = tomllib.loads(rendered_pipeline(docs)[0])["schema"]
    assert schema["token"] == "${EVENTFLEET_REGISTRY_TOKEN}"
    assert not {"username", "password", "subject", "ca_file"} & set(schema)
    assert all(v["name"] != "registry-ca" for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"])


def test_no_registry_by_default() -> None:
    docs = render()
    assert not [e for e in container(docs)["env"] if e["name"].startswith("EVENTFLEET_REGISTRY_")]
    assert tomllib.loads(rendered_pipeline(docs)[0])["schema"] == {"path": "schema.avsc", "decoder": "fastavro"}


def test_postgres_dsn_from_a_secret() -> None:
    docs = render("msk-iam-values.yaml")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["EVENTFLEET_POSTGRES_DSN"]["valueFrom"]["secretKeyRef"]["name"] == "eventfleet-postgres-dsn"
    assert "PGHOST" not in env
    assert tomllib.loads(rendered_pipeline(docs)[0])["sink"]["dsn"] == "${EVENTFLEET_POSTGRES_DSN}"


def test_msk_iam_and_irsa() -> None:
    docs = render("msk-iam-values.yaml")
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/eventfleet"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    kafka = tomllib.loads(rendered_pipeline(docs)[0])["kafka"]
    assert kafka["auth"] == "msk-iam"
    assert kafka["region"] == "eu-west-1"
    assert "security.protocol" not in kafka.get("config", {}), "msk-iam sets its own protocol"
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container(docs)["env"]
    assert container(docs)["image"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/eventfleet:0.1.0"


GLUE_SETS = (
    "glue.enabled=true",
    "glue.region=eu-west-1",
    "glue.registryName=analytics",
    "glue.schemaName=ad-events-value",
    "serviceAccount.roleArn=arn:aws:iam::123456789012:role/eventfleet",
)


def test_glue_schema_registry_renders_the_schema_keys() -> None:
    assert set(tomllib.loads(rendered_pipeline(render())[0])["schema"]) == {"path", "decoder"}, "off by default"
    docs = render(None, *GLUE_SETS)
    assert_valid(docs)
    schema = tomllib.loads(rendered_pipeline(docs)[0])["schema"]
    assert schema == {
        "path": "schema.avsc",  # the reader schema
        "decoder": "fastavro",
        "registry": "glue",
        "registry_name": "analytics",
        "region": "eu-west-1",
        "subject": "ad-events-value",
    }
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/eventfleet"
    # Without a region or schema name the SDK's region and eventfleet's "<topic>-value" apply.
    schema = tomllib.loads(rendered_pipeline(render(None, "glue.enabled=true"))[0])["schema"]
    assert schema["registry"] == "glue" and schema["registry_name"] == "default-registry"
    assert "region" not in schema and "subject" not in schema


def test_glue_policy_in_the_readme_is_what_terraform_grants() -> None:
    """The chart creates no IAM; its README gives the policy to attach for IRSA: the same reading
    statement as the Terraform module's glue policy document."""
    readme = (CHART / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, flags=re.S) if "glue:" in b]
    assert len(blocks) == 1, "one Glue policy in helm/eventfleet/README.md"
    [statement] = blocks[0]["Statement"]
    reading = [
        st for st in _policy_statements(_module("data")["aws_iam_policy_document.glue"])
        if st["actions"] == ["glue:GetSchemaVersion"]
    ]  # fmt: skip
    assert len(reading) == 1 and reading[0]["resources"] == ["*"], reading
    assert statement == {
        "Sid": reading[0]["sid"],
        "Effect": "Allow",
        "Action": ["glue:GetSchemaVersion"],
        "Resource": "*",
    }


def test_pod_runs_non_root_on_a_read_only_root_filesystem() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    c = container(docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # the supervisor's multiprocess metrics directory needs a writable /tmp
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert next(v for v in pod["volumes"] if v["name"] == tmp["name"])["emptyDir"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert c["command"][:3] == ["tini", "--", "eventfleet"], "tini passes SIGTERM to the supervisor"


def test_grafana_dashboard_configmap_for_the_sidecar() -> None:
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")], "off by default"
    docs = render("keda-monitoring-values.yaml")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "eventfleet"}
    shipped = json.loads((CHART / "dashboards" / "eventfleet.json").read_text())
    assert json.loads(cm["data"]["eventfleet.json"]) == shipped


def test_sqlite_needs_a_single_pod_and_a_volume(tmp_path: Path) -> None:
    docs = render("sqlite-values.yaml")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two pods on one SQLite file"
    pod = deployment["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "eventfleet-data"}


def test_the_example_schema_is_shipped_unchanged() -> None:
    assert (CHART / "files" / "ad_event.avsc").read_text() == (ROOT / "schemas" / "ad_event.avsc").read_text()
    _, avsc = rendered_pipeline(render())
    assert json.loads(avsc) == json.loads((ROOT / "schemas" / "ad_event.avsc").read_text())


def test_a_schema_passed_with_set_file_replaces_the_example(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "Reading",
        "fields": [{"name": "ts", "type": "long"}, {"name": "v", "type": "double"}],
    }
    path = tmp_path / "reading.avsc"
    path.write_text(json.dumps(schema))
    out = helm("template", "rel", ".", "--set-file", f"schema.avsc={path}", "--set", "window.timeField=ts",
               "--set", "aggregate.groupBy=null", "--set", "aggregate.metrics.spend=null",
               "--set", "aggregate.metrics.total=sum:v")  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    toml_text, avsc = rendered_pipeline(docs)
    assert json.loads(avsc) == schema
    pipeline = load_as_in_container(
        toml_text,
        {"/etc/eventfleet/pipeline.toml": toml_text, "/etc/eventfleet/schema.avsc": avsc},
        fake_environ(container(docs)["env"]),
        (),
        tmp_path,
    )
    assert [m.name for m in pipeline.aggregate.metrics] == ["events", "total"]


def _schema_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Every value the schema closes (additionalProperties false), down to free-form maps: the
    top-level keys and every leaf."""
    out = []
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("additionalProperties") is False:
            out += [path] if not prefix else []
            out += _schema_paths(sub, path + ".")
        else:
            out.append(path)
    return out


def test_values_schema_accepts_the_defaults_and_every_ci_set() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    assert set(defaults) == set(schema["properties"]) - {"global"}, "every value is in the schema and back"


def test_every_value_is_commented_and_in_the_chart_readme() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_.\"-]+:", line) and not line.lstrip().startswith("#"):
            above = lines[i - 1].strip()
            assert above.startswith("#"), f"values.yaml line {i + 1} ({line.strip()}) has no comment above it"
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = [p for p in _schema_paths(schema) if p != "global" and f"`{p}`" not in readme]
    assert not missing, f"values not in helm/eventfleet/README.md: {missing}"


def test_the_loader_catches_what_the_schema_cannot(tmp_path: Path) -> None:
    """The schema checks shapes; the pipeline's meaning (fields of the Avro schema, their types) only
    eventfleet's loader knows: rendered values that pass the schema can still be refused here."""
    docs = render("sqlite-values.yaml", "aggregate.metrics.spend=sum:country")
    toml_text, avsc = rendered_pipeline(docs)
    c = container(docs)
    with pytest.raises(ConfigError) as info:
        load_as_in_container(
            toml_text,
            {"/etc/eventfleet/pipeline.toml": toml_text, "/etc/eventfleet/schema.avsc": avsc},
            fake_environ(c.get("env", [])),
            ("/var/lib/eventfleet",),
            tmp_path,
        )
    assert info.value.key == "aggregate.metrics.spend"


def _notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template leaves it out): rendered through tpl
    in a copy of the chart."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files" / "notes-under-test.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "files/notes-under-test.txt") . | quote }}\n'
    )
    out = subprocess.run(
        [str(helm_binary()), "template", "rel", str(chart), "--show-only", "templates/notes-under-test.yaml", *args],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    notes: str = yaml.safe_load(out.stdout)["data"]["notes"]
    return notes


def test_notes_warn_about_idle_workers(tmp_path: Path) -> None:
    notes = _notes(tmp_path, "--set", "replicaCount=3", "--set", "workers=4")
    assert "12 workers for 8 partitions" in notes
    assert "4 worker(s) will sit idle" in notes
    assert "At most 2 pod(s) of 4 worker(s) are useful" in notes
    assert "eventfleet check-config --config /etc/eventfleet/pipeline.toml" in notes
    assert "idle" not in _notes(tmp_path / "2", "--set", "replicaCount=2", "--set", "workers=4")


def test_notes_show_the_autoscaler_range(tmp_path: Path) -> None:
    notes = _notes(tmp_path, "-f", str(CHART / "ci" / "keda-monitoring-values.yaml"))
    assert "KEDA scales on lag: 0 to 4 pods" in notes
