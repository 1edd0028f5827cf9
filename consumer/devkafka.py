"""The local Apache Kafka for development, tests, the demo and the benchmark.

A single-node Kafka 4.x broker in KRaft mode (broker and controller in one JVM), built from the
official jars that Maven resolves from Maven Central into a cache folder, started with ``java``.
Needs only Java 17+ and Maven on the PATH.
"""

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KafkaSetupError

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
DEFAULT_PORT = 9092
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>eventfleet</groupId><artifactId>devkafka</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

_SERVER = """# Written by eventfleet: a single-node KRaft broker for development, on loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=3000
"""


def cache_dir() -> Path:
    """Where the jars are kept: $EVENTFLEET_CACHE, else ~/.cache/eventfleet."""
    root = os.environ.get("EVENTFLEET_CACHE") or Path.home() / ".cache" / "eventfleet"
    return Path(root) / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Resolve the broker's jars with Maven once; returns the folder holding them."""
    root = cache_dir()
    lib, done = root / "lib", root / "lib.complete"
    if done.exists():
        return lib
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise KafkaSetupError(f"'{tool}' is not on the PATH: install Java 17+ and Maven (apt-get install maven)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    shutil.rmtree(lib, ignore_errors=True)
    cmd = ["mvn", "-B", "-q", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise KafkaSetupError(
            f"Maven could not resolve Kafka {KAFKA_VERSION}:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    done.touch()
    return lib


@dataclass
class Broker:
    """A local broker's folder, port and process."""

    home: Path
    port: int = DEFAULT_PORT
    cluster_id: str | None = None  # for a fresh folder; None: a random one

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def pid(self) -> int | None:
        """The broker's process id if it is running."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def up(self) -> None:
        """Start the broker unless it runs already; returns once it answers."""
        if self.pid() is not None and reachable(self.bootstrap):
            return
        if reachable(self.bootstrap, timeout_s=2):
            raise KafkaSetupError(f"something else already answers on {self.bootstrap}; use another --port")
        lib = ensure_jars()
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(_SERVER.format(port=self.port, controller_port=self.port + 1, data=data.resolve()))
        (self.home / "log4j2.properties").write_text(_LOG4J)
        log4j = (self.home / "log4j2.properties").resolve()
        java = ["java", "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]  # fmt: skip
        if not (data / "meta.properties").exists():
            format_storage(java, props, self.cluster_id or new_cluster_id())
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaSetupError(
                    f"the broker exited with {proc.returncode}; see {self.log_file}:\n{self._log_tail()}"
                )
            if reachable(self.bootstrap, timeout_s=2):
                return
            time.sleep(0.5)
        self.down()
        raise KafkaSetupError(f"the broker did not answer within {START_TIMEOUT_S:.0f} s; see {self.log_file}")

    def down(self) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after a timeout); False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 (22 characters, may begin with '-')."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def format_command(java: list[str], props: Path, cluster_id: str) -> list[str]:
    """The storage tool's command line. The id is joined to its option: one that begins with '-'
    (1 in 64 ids) would otherwise be read as an option, and the format would fail."""
    return [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(props)]


def format_storage(java: list[str], props: Path, cluster_id: str) -> None:
    """Format the KRaft storage of ``props``'s log.dirs with ``cluster_id``."""
    fmt = subprocess.run(format_command(java, props, cluster_id), capture_output=True, text=True)
    if fmt.returncode != 0:
        raise KafkaSetupError(f"formatting the KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def reachable(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a Kafka broker answers a metadata request at ``bootstrap``."""
    from confluent_kafka.admin import AdminClient

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}
    admin = AdminClient(settings)
    try:
        admin.list_topics(timeout=timeout_s)
    except Exception:
        return False
    return True


class _Quiet:
    def log(self, *_args: object) -> None:
        pass


_quiet = _Quiet()


def default_home(port: int) -> Path:
    return Path(".eventfleet") / f"kafka-{port}"
