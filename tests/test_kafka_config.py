"""A [kafka.config] that librdkafka refuses is one line naming the key, exit 2, before anything
joins the group (librdkafka checks its settings when a client is created: no broker needed)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("command", [["check-config"], ["run", "--workers", "1", "--metrics-port", "0"], ["worker"]])
def test_a_setting_librdkafka_refuses_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    doc = {
        "kafka": {
            "bootstrap_servers": f"127.0.0.1:{_closed_port()}",
            "topics": ["ad-events"],
            "group_id": "g",
            "config": {"fetch.max.bytes": 1000},  # below message.max.bytes: refused
        },
        "schema": {"path": str(SCHEMA)},
        "window": {"size": "1m"},
        "aggregate": {"metrics": {"events": "count"}},
        "sink": {"type": "sqlite", "path": str(tmp_path / "out.db"), "table": "stats"},
    }
    path = tmp_path / "p.toml"
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "consumer", command[0], "--config", str(path), *command[1:]],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("eventfleet: config error at 'kafka.config': librdkafka refused it: "), done.stderr
    assert "fetch.max.bytes" in done.stderr and "Fix: " in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
