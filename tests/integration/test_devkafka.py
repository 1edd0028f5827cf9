"""``eventfleet kafka up`` on a fresh folder, whatever the cluster id it draws."""

from pathlib import Path

import pytest

from consumer.dev import kafka as devkafka

from .conftest import free_ports

pytestmark = pytest.mark.integration


def test_a_fresh_broker_starts_with_a_cluster_id_beginning_with_a_dash(tmp_path: Path) -> None:
    cluster_id = "-" + devkafka.new_cluster_id()[1:]  # one id in 64 begins with '-'
    broker = devkafka.Broker(tmp_path / "kafka", free_ports(2), cluster_id=cluster_id)
    try:
        broker.up()
        assert devkafka.reachable(broker.bootstrap)
    finally:
        broker.down()
    meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}\n" in meta
