"""Shared helpers of the deployment tests: the helm binary, rendering, and loading a rendered
pipeline with eventfleet's own config loader as the container would see it.

These tests need no broker: they check the Dockerfile, docker-compose.yml and the Helm chart.
helm comes from `make tools` (scripts/tools.sh: go install into .cache/tools/bin) or $HELM.
"""

import os
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer import config
from consumer.errors import ConfigError

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "eventfleet"
# The Kubernetes version the chart is rendered for and validated against (EKS supports it).
KUBE_VERSION = "1.33.0"
# Value sets the tests render: None is the chart's defaults, the others are files in ci/.
VALUE_SETS = [None, *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]


def helm_binary() -> Path:
    path = Path(os.environ.get("HELM") or ROOT / ".cache" / "tools" / "bin" / "helm")
    if not path.is_file():
        pytest.fail(f"helm not found at {path}: run `make tools` (or set HELM to a helm 3 binary)")
    return path


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm on the chart folder; raises with helm's stderr when check and it fails."""
    result = subprocess.run(
        [str(helm_binary()), *args], cwd=CHART, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def value_args(values: str | None, sets: tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(CHART / "ci" / values)] if values else []
    for s in sets:
        args += ["--set", s]
    return args


def render(values: str | None = None, *sets: str) -> list[dict[str, Any]]:
    """`helm template` with a ci/ values file and --set overrides: the rendered documents."""
    out = helm(
        "template", "rel", ".", "--namespace", "fleet", "--kube-version", KUBE_VERSION, *value_args(values, sets)
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def assert_valid(docs: list[dict[str, Any]]) -> None:
    """Every document valid for the Kubernetes API; strict: an unknown field (a typo in a
    template) fails too."""
    import kubernetes_validate

    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def render_error(values: str | None = None, *sets: str) -> str:
    """`helm template` that must fail: its error text."""
    args = ["template", "rel", ".", "--kube-version", KUBE_VERSION, *value_args(values, sets)]
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm {' '.join(args)} rendered, but should have refused the values"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    """The one resource of a kind: the fleet's, or a component's ("tail": the tailer's, labelled
    app.kubernetes.io/component)."""
    found = [
        d
        for d in docs
        if d["kind"] == kind and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind}{f' of {component}' if component else ''}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    c: dict[str, Any] = pod["containers"][0]
    return c


def fake_environ(env: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as far as the manifest says: literal values, and a stand-in
    for each Secret reference: the loader needs them set, and a DSN must parse as one."""
    out = {}
    for e in env:
        if "value" in e:
            out[e["name"]] = str(e["value"])
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            stand_in = f"secret-{ref['name']}-{ref['key']}"
            out[e["name"]] = f"postgresql://{stand_in}@db.invalid/stats" if e["name"].endswith("DSN") else stand_in
    return out


def load_as_in_container(
    pipeline_toml: str,
    files: Mapping[str, str],
    environ: Mapping[str, str],
    writable_dirs: tuple[str, ...],
    tmp_path: Path,
) -> config.Pipeline:
    """Load a pipeline with consumer.config as the container would: files at their container paths
    (under tmp_path), ${NAME} from the container's environment, absolute paths inside tmp_path."""
    doc = tomllib.loads(pipeline_toml)
    doc = config.expand_env(doc, environ)
    for container_path, text in files.items():
        target = tmp_path / container_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    for d in writable_dirs:
        (tmp_path / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for section, key in (("schema", "path"), ("sink", "path"), ("schema", "ca_file")):
        path = doc.get(section, {}).get(key)
        if isinstance(path, str) and path.startswith("/"):
            doc[section][key] = str(tmp_path / path.lstrip("/"))
    source = tmp_path / "etc" / "eventfleet" / "pipeline.toml"
    try:
        return config.parse(doc, source)
    except ConfigError as e:
        if e.key == "ingest" and "unknown section" in str(e):
            pytest.skip("this build's loader has no [ingest] yet (eventfleet tail, #14)")
        raise


def secret_files(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The files the pod's Secret volumes put in the container (path -> a stand-in text)."""
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container(docs).get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        for item in (secret or {}).get("items", []):
            out[f"{mount['mountPath']}/{item['path']}"] = f"stand-in for {secret['secretName']}/{item['key']}"
    return out


def rendered_pipeline(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """The chart's ConfigMap: (pipeline.toml, schema.avsc)."""
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "pipeline.toml" in d.get("data", {}))
    return cm["data"]["pipeline.toml"], cm["data"]["schema.avsc"]
