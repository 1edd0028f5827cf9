"""A local PostgreSQL for development, tests and the benchmark (like dev/kafka.py for the broker).

A throwaway cluster: ``initdb`` into a folder, then ``pg_ctl`` starts the server on 127.0.0.1
only, trust authentication, superuser ``eventfleet``. The binaries come from the PATH or from
Debian's ``/usr/lib/postgresql/<version>/bin`` (``apt-get install postgresql``).

PostgreSQL refuses to run as root: when we are root, the folder is given to the ``postgres`` user
(or ``nobody`` if there is none) and initdb, pg_ctl and the server run as that user.
"""

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EventfleetError

DEFAULT_PORT = 5432
SUPERUSER = "eventfleet"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


class PostgresSetupError(EventfleetError):
    """The local development PostgreSQL cannot be set up, started or stopped."""


def find_bin(name: str) -> Path:
    """A PostgreSQL server program: from the PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return Path(found)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version, reverse=True)
    if not candidates:
        raise PostgresSetupError(
            f"'{name}' is not on the PATH nor in /usr/lib/postgresql/*/bin: install the PostgreSQL server "
            "(apt-get install postgresql), or point the tests at a server with EVENTFLEET_TEST_PG_DSN"
        )
    return candidates[0]


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresSetupError("running as root and there is neither a 'postgres' nor a 'nobody' user to run as")


@dataclass
class Server:
    """A local PostgreSQL cluster: its folder (data, log, socket), port and settings."""

    home: Path
    port: int = DEFAULT_PORT
    fsync: bool = True  # off only for throwaway test clusters: a machine crash may lose them

    def __post_init__(self) -> None:
        self.home = self.home.absolute()  # the commands run inside it

    @classmethod
    def temporary(cls, port: int | None = None, fsync: bool = True) -> "Server":
        """A fresh cluster in a new folder under the system temp dir (where an unprivileged
        user can reach it); ``remove()`` deletes it."""
        home = Path(tempfile.mkdtemp(prefix="eventfleet-pg-"))
        return cls(home, port or free_port(), fsync)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        extra: dict[str, Any] = {}
        if user is not None:
            extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # ours, not the caller's
        result = subprocess.run(
            args, cwd=self.home, env=env, capture_output=True, text=True, start_new_session=True, **extra
        )
        if check and result.returncode != 0:
            raise PostgresSetupError(
                f"{Path(args[0]).name} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
                + self._log_tail()
            )
        return result

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user is not None:
            blocked = _unreachable_parent(self.home, user)
            if blocked is not None:
                raise PostgresSetupError(
                    f"PostgreSQL runs as user {user.pw_name} (it refuses root), who cannot enter {str(blocked)!r} "
                    f"to reach {str(self.home)!r}. Use a folder it can reach (--dir /tmp/..., or /var/lib/...)"
                )
            os.chown(self.home, user.pw_uid, user.pw_gid)
            for path in self.home.rglob("*"):
                if path.owner() != user.pw_name:
                    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._cmd([str(find_bin("pg_ctl")), "status", "-D", str(self.data)], check=False).returncode == 0

    def up(self) -> None:
        """Create the cluster if needed and start it; returns once it accepts connections."""
        if self.running():
            return
        if _listening(self.port):
            raise PostgresSetupError(f"something else already listens on 127.0.0.1:{self.port}; use another port")
        self._prepare_home()
        if not self.initialised():
            args = [str(find_bin("initdb")), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                    "--encoding=UTF8", "--no-locale"]  # fmt: skip
            self._cmd([*args, "--no-sync"] if not self.fsync else args)
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.home.resolve()}'",
                "fsync": "on" if self.fsync else "off",
                "full_page_writes": "on" if self.fsync else "off",
            }
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write("\n# eventfleet: a local development server on loopback only\n")
                conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start()

    def start(self) -> None:
        """Start the (initialised) server and wait until it accepts connections."""
        self._prepare_home()  # the log file, if root wrote it
        self._cmd([str(find_bin("pg_ctl")), "start", "-D", str(self.data), "-l", str(self.log_file),
                   "-w", "-t", str(START_TIMEOUT_S)])  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (roll back sessions, checkpoint), ``immediate`` (like a crash:
        recovery at the next start) or ``smart`` (wait for the sessions to end)."""
        self._cmd([str(find_bin("pg_ctl")), "stop", "-D", str(self.data), "-m", mode, "-w",
                   "-t", str(STOP_TIMEOUT_S)])  # fmt: skip

    def down(self) -> bool:
        """Stop the server if it runs; False if it was not running."""
        if not self.running():
            return False
        self.stop()
        return True

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server: the postmaster, its live children,
        and the children it has reaped (sessions that ended). For benchmarks."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc_stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = proc_stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            pid, ppid = int(proc_stat.parent.name), int(fields[1])
            if pid == postmaster:
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            elif ppid == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            return ""
        return f"\n{self.log_file}:\n" + "\n".join(lines)


def _unreachable_parent(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first folder above ``path`` that ``user`` may not enter (None: all can be entered)."""
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return folder
    return None


def default_home(port: int) -> Path:
    return Path(".eventfleet") / f"postgres-{port}"
