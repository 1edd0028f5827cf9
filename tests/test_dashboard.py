"""The Grafana dashboard queries only metrics that eventfleet declares."""

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import consumer.metrics  # noqa: F401 - registers every metric

DASHBOARD = Path(__file__).parents[1] / "helm" / "eventfleet" / "dashboards" / "eventfleet.json"


def declared_series() -> set[str]:
    names = set()
    for collector in list(REGISTRY._collector_to_names):
        for metric in collector.describe() if hasattr(collector, "describe") else []:
            for sample in ("", "_total", "_bucket", "_count", "_sum", "_created"):
                names.add(metric.name + sample)
    return names


def test_every_dashboard_query_names_a_declared_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(eventfleet_[a-z_]+)", e)}
    assert used, "the dashboard queries no eventfleet metric"
    unknown = used - declared_series()
    assert not unknown, f"the dashboard queries undeclared metrics: {sorted(unknown)}"


def test_metric_names_follow_prometheus_conventions() -> None:
    source = (Path(__file__).parents[1] / "consumer" / "metrics.py").read_text()
    names = re.findall(r'"(eventfleet_[a-z_]+)"', source)
    assert len(names) >= 15
    for name in names:
        kind = re.search(rf'(\w+)\(\s*"{name}"', source)
        assert kind is not None
        if kind.group(1) == "Counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
