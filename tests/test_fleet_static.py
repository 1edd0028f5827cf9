"""Static membership of `eventfleet run`: the instance id, its settings, and the lock that keeps two
instances with one id off the same host."""

import os
import socket
import tomllib
from pathlib import Path

import pytest
import tomli_w

from consumer.config import load
from consumer.errors import ConfigError, EventfleetError
from consumer.fleet import claim_instance, instance_id

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"


def _pipeline(tmp_path: Path, fleet: dict[str, object] | None = None, group: str = "g"):  # type: ignore[no-untyped-def]
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": group},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": "1m"},
        "aggregate": {"metrics": {"events": "count"}},
        "sink": {"type": "sqlite", "path": "out.db", "table": "stats"},
    }
    doc["fleet"] = {"static_membership": True, **(fleet or {})}  # these tests are about static membership
    path = tmp_path / f"{group}.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


def test_the_instance_id_is_configured_else_from_the_environment_else_the_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTFLEET_INSTANCE_ID", raising=False)
    assert instance_id(_pipeline(tmp_path)) == socket.gethostname()
    monkeypatch.setenv("EVENTFLEET_INSTANCE_ID", "pod-7")
    assert instance_id(_pipeline(tmp_path)) == "pod-7"
    assert instance_id(_pipeline(tmp_path, {"instance_id": "eu-1.a"})) == "eu-1.a"
    assert instance_id(_pipeline(tmp_path, {"static_membership": False})) is None
    monkeypatch.setenv("EVENTFLEET_INSTANCE_ID", "pod 7")
    with pytest.raises(EventfleetError, match="EVENTFLEET_INSTANCE_ID='pod 7' is not an instance id"):
        instance_id(_pipeline(tmp_path))


def test_static_membership_is_on_unless_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTFLEET_INSTANCE_ID", raising=False)
    p = _pipeline(tmp_path, {"static_membership": False})
    doc = tomli_w.dumps({k: v for k, v in tomllib.loads(p.source.read_text()).items() if k != "fleet"})
    path = tmp_path / "default.toml"
    path.write_text(doc, encoding="utf-8")
    assert load(path).fleet.static_membership is True
    assert instance_id(load(path)) == socket.gethostname()
    assert instance_id(p) is None


@pytest.mark.parametrize(
    ("fleet", "key"),
    [
        ({"instance_id": "two words"}, "fleet.instance_id"),
        ({"instance_id": ""}, "fleet.instance_id"),
        ({"instance_id": 7}, "fleet.instance_id"),
        ({"static_membership": "yes"}, "fleet.static_membership"),
    ],
)
def test_bad_static_membership_settings_name_their_key(tmp_path: Path, fleet: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _pipeline(tmp_path, fleet)
    assert f"config error at '{key}'" in str(err.value)


def test_a_second_claim_of_one_id_on_this_host_names_the_holder_and_the_fix(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    fd = claim_instance(pipeline, "twin-host")
    try:
        with pytest.raises(EventfleetError) as err:
            claim_instance(pipeline, "twin-host")
        message = str(err.value)
        assert f"(pid {os.getpid()}) is instance 'twin-host' of group 'g'" in message
        assert "EVENTFLEET_INSTANCE_ID" in message and "[fleet] instance_id" in message
        other = claim_instance(_pipeline(tmp_path, group="other"), "twin-host")  # another group: no collision
        os.close(other)
    finally:
        os.close(fd)
    os.close(claim_instance(pipeline, "twin-host"))  # released with its holder
