"""deploy/systemd/eventfleet-tail.service: systemd's own checks (`systemd-analyze verify` and the
offline `systemd-analyze security` score) and the settings the tailer's guarantees rely on.

systemd does not run here as PID 1, so the unit is not started; systemd-analyze reads it as
systemd would (and refuses a unit whose command is not executable: the test points ExecStart at
this checkout's real `eventfleet`).
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumer import commands

from .conftest import ROOT

UNIT = ROOT / "deploy" / "systemd" / "eventfleet-tail.service"
INSTALLED_BINARY = "/opt/eventfleet/bin/eventfleet"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is a sealed service, 10 an unprotected one


def _settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values, in order (systemd keys may repeat: SystemCallFilter=)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        assert section is not None, f"{line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] has no {key}="
    return values[-1]


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|)", value)
    assert m, f"a systemd time span: {value!r}"
    return float(m[1]) * {"ms": 0.001, "s": 1, "": 1, "min": 60}[m[2]]


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        message = "systemd-analyze not found: apt-get install systemd (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _runnable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's eventfleet (verify checks that the
    command is executable)."""
    here = Path(sys.executable).parent / "eventfleet"
    assert here.is_file(), "eventfleet's console script next to the test's Python (make install)"
    unit = tmp_path / UNIT.name
    unit.write_text((text or UNIT.read_text()).replace(INSTALLED_BINARY, str(here)))
    return unit


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(_runnable_copy(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"warnings: {result.stderr}"


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: an unknown key warns, a missing command fails."""
    typo = _runnable_copy(tmp_path, UNIT.read_text().replace("Restart=always", "Restat=always"))
    result = subprocess.run([_systemd_analyze(), "verify", str(typo)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in result.stderr and "Restat" in result.stderr
    missing = tmp_path / "missing" / UNIT.name
    missing.parent.mkdir()
    missing.write_text(UNIT.read_text())  # /opt/eventfleet/bin/eventfleet does not exist here
    result = subprocess.run([_systemd_analyze(), "verify", str(missing)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "is not executable" in result.stderr


def test_exposure_score_is_low(tmp_path: Path) -> None:
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=true", str(_runnable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score[1]) <= MAX_EXPOSURE, result.stdout


def test_runs_eventfleet_tail_under_a_user_of_its_own_and_restarts() -> None:
    unit = _settings(UNIT.read_text())
    service = unit["Service"]
    assert _one(unit, "Service", "DynamicUser") == "yes" or _one(unit, "Service", "User") not in ("", "root")
    assert _one(unit, "Service", "Restart") == "always", "a crash resumes from the positions committed in Kafka"
    assert _one(unit, "Service", "KillSignal") == "SIGTERM", "SIGTERM: commit what was read, exit 0"
    assert _one(unit, "Service", "KillMode") in ("mixed", "control-group")
    assert 30 <= _seconds(_one(unit, "Service", "TimeoutStopSec")) <= 300
    assert _one(unit, "Service", "ProtectSystem") == "strict"
    assert _one(unit, "Service", "NoNewPrivileges") == "yes"
    assert _one(unit, "Service", "CapabilityBoundingSet") == "", "no capabilities"
    # the log folder: read-only (the tailer never writes, truncates nor deletes a log)
    read_only = " ".join(service["ReadOnlyPaths"]).split()
    assert read_only and all(p.startswith("/") for p in read_only)
    assert "ReadWritePaths" not in service
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in _one(unit, "Unit", "After")


def test_exec_start_is_an_eventfleet_tail_command_line() -> None:
    argv = shlex.split(_one(_settings(UNIT.read_text()), "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BINARY
    i = argv.index("tail")
    assert argv[i + 1 :][:2] == ["--config", "/etc/eventfleet/tail.toml"]
    assert "--metrics-port" in argv, "/metrics, /healthz, /readyz for the host's Prometheus"
    parser = commands.parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "tail" not in subcommands.choices:
        pytest.skip("eventfleet tail is not in this build yet (branch tail)")
    args = parser.parse_args(argv[1:])  # the unit's arguments as eventfleet's own parser reads them
    assert args.config == "/etc/eventfleet/tail.toml"
    assert args.metrics_port == int(argv[argv.index("--metrics-port") + 1])
