"""The local PostgreSQL for development: `eventfleet postgres up|status|down` on a real server."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from consumer.dev import postgres as devpostgres


def eventfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "consumer", *args], capture_output=True, text=True, timeout=120)


def test_postgres_up_status_down() -> None:
    home = Path(tempfile.mkdtemp(prefix="eventfleet-pg-cli-"))
    home.chmod(0o755)  # as root the server runs as another user, who must reach the folder
    port = str(devpostgres.free_port())
    try:
        up = eventfleet("postgres", "up", "--port", port, "--dir", str(home / "pg"))
        assert up.returncode == 0, up.stderr
        dsn = f"postgresql://eventfleet@127.0.0.1:{port}/postgres"
        assert f'dsn = "{dsn}"' in up.stdout
        with psycopg.connect(dsn) as db:
            assert db.execute("SELECT 1").fetchone() == (1,)
        assert eventfleet("postgres", "up", "--port", port, "--dir", str(home / "pg")).returncode == 0  # idempotent
        status = eventfleet("postgres", "status", "--port", port, "--dir", str(home / "pg"))
        assert status.returncode == 0 and "running" in status.stdout
        down = eventfleet("postgres", "down", "--port", port, "--dir", str(home / "pg"))
        assert down.returncode == 0 and "stopped" in down.stdout
        status = eventfleet("postgres", "status", "--port", port, "--dir", str(home / "pg"))
        assert status.returncode == 1 and "not running" in status.stdout
    finally:
        devpostgres.Server(home / "pg", int(port)).down()
        shutil.rmtree(home, ignore_errors=True)
