"""The local Apache Kafka for development, tests, the demo and the benchmark.

A single-node Kafka 4.x broker in KRaft mode (broker and controller in one JVM), built from the
official jars that Maven resolves from Maven Central into a cache folder, started with ``java``.
Needs only Java 17+ and Maven on the PATH.

:class:`Cluster` runs three such nodes (``eventfleet kafka up --brokers 3``), each broker and
controller at once: three JVMs rather than six, which is what two cores carry beside a test suite,
and still a quorum of three voters that survives one lost node and stops with two. Replication
factor 3 and ``min.insync.replicas=2`` everywhere, so one broker down loses nothing and blocks
no writer, and two down block every ``acks=all`` writer (the dead letters, the kafka sink).

``security="sasl-ssl"`` adds a SASL_SSL listener (SCRAM-SHA-512 over TLS) beside the plaintext
one: a CA and a broker certificate made with ``openssl`` on first start, and a user whose
password the storage tool writes into the metadata when the node is formatted.
"""

import base64
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KafkaSetupError
from .process import alive

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

_SERVER = """# Written by eventfleet: a KRaft node for development, on loopback only.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=3000
"""

# The SASL_SSL listener: SCRAM-SHA-512 over TLS, with a PEM keystore (key and certificate chain).
_SECURITY = """sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.client.auth=none
"""

SECURITY_MODES = ("none", "sasl-ssl")
SCRAM_USER = "eventfleet"
CLUSTER_SIZE = 3
CONTROLLER_OFFSET = 10  # a cluster on P: controllers on P+10, P+11, P+12
SECURE_OFFSET = 20  # and its SASL_SSL listeners on P+20, P+21, P+22 (one broker: P+2)
CERT_DAYS = 3650


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


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 (22 characters, may begin with '-')."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


@dataclass
class Credentials:
    """What a client of the SASL_SSL listener needs: the CA to trust and the SCRAM user."""

    ca_file: Path
    keystore: Path  # the broker's key and certificate chain (PEM)
    username: str
    password: str


def ensure_credentials(folder: Path) -> Credentials:
    """The CA, the broker certificate (for 127.0.0.1 and localhost) and the SCRAM password kept in
    ``folder``, made with ``openssl`` the first time."""
    tls = folder / "tls"
    ca_key, ca_file, key, csr, cert = (tls / n for n in ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.crt"))
    keystore = tls / "broker-keystore.pem"
    password_file = folder / "scram-password"
    if not keystore.exists():
        if shutil.which("openssl") is None:
            raise KafkaSetupError("'openssl' is not on the PATH: install it (apt-get install openssl)")
        tls.mkdir(parents=True, exist_ok=True)
        ext = tls / "broker.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        days = str(CERT_DAYS)
        steps = [
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(ca_key)],
            ["openssl", "req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", days,
             "-subj", "/CN=eventfleet local CA", "-out", str(ca_file)],
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
            ["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=127.0.0.1", "-out", str(csr)],
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_file), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", days, "-sha256", "-extfile", str(ext), "-out", str(cert)],
        ]  # fmt: skip
        for cmd in steps:
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise KafkaSetupError(f"{' '.join(cmd[:2])} failed making the TLS files in {tls}:\n{result.stderr}")
        # genpkey writes PKCS#8, the form Kafka's PEM keystore reads
        keystore.write_text(key.read_text() + cert.read_text() + ca_file.read_text())
    if not password_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        password_file.write_text(secrets.token_urlsafe(18))
        password_file.chmod(0o600)
    return Credentials(ca_file.resolve(), keystore.resolve(), SCRAM_USER, password_file.read_text().strip())


@dataclass
class Broker:
    """A local broker's folder, ports and process: one KRaft node (broker and controller)."""

    home: Path
    port: int = DEFAULT_PORT
    node_id: int = 1
    controller_port: int | None = None  # default: port + 1
    voters: str | None = None  # controller.quorum.voters; default: this node alone
    replication: int = 1  # default replication factor of every topic; min.insync.replicas: 1 or 2
    security: str = "none"  # "sasl-ssl": a SASL_SSL listener too
    secure_port: int | None = None  # default: port + 2
    secrets_dir: Path | None = None  # CA, certificate, password; default: home
    cluster_id: str | None = None  # the cluster's (for the nodes of a cluster); default: a new one
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise KafkaSetupError(f"unknown security {self.security!r}: use one of {', '.join(SECURITY_MODES)}")
        if self.controller_port is None:
            self.controller_port = self.port + 1
        if self.secure_port is None:
            self.secure_port = self.port + 2
        if self.voters is None:
            self.voters = f"{self.node_id}@127.0.0.1:{self.controller_port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """The SASL_SSL listener (with ``security="sasl-ssl"``)."""
        return f"127.0.0.1:{self.secure_port}"

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
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def credentials(self) -> Credentials:
        return ensure_credentials(self.secrets_dir or self.home)

    def up(self) -> None:
        """Start the broker unless it runs already; returns once it answers."""
        if self.pid() is not None and reachable(self.bootstrap):
            return
        self.start()
        self.wait_ready()

    def start(self) -> None:
        """Start the broker process (formatting its storage the first time) without waiting."""
        if self.pid() is not None:
            return
        if reachable(self.bootstrap, timeout_s=2):
            raise KafkaSetupError(f"something else already answers on {self.bootstrap}; use another --port")
        lib = ensure_jars()
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        advertised = listeners
        if self.security == "sasl-ssl":
            advertised += f",SASL_SSL://127.0.0.1:{self.secure_port}"
            listeners = advertised
        text = _SERVER.format(
            node_id=self.node_id,
            voters=self.voters,
            listeners=f"{listeners},CONTROLLER://127.0.0.1:{self.controller_port}",
            advertised=advertised,
            data=data.resolve(),
            replication=self.replication,
            min_isr=min(2, self.replication),
        )
        format_args: list[str] = []
        if self.security == "sasl-ssl":
            creds = self.credentials()
            text += _SECURITY.format(keystore=creds.keystore)
            format_args = ["--add-scram", f"SCRAM-SHA-512=[name={creds.username},password={creds.password}]"]
            if (data / "meta.properties").exists() and not (self.home / "scram.formatted").exists():
                raise KafkaSetupError(
                    f"{self.home} holds a broker formatted without the SCRAM user: remove the folder, "
                    "or give --security sasl-ssl another --port (or --dir)"
                )
        props.write_text(text)
        (self.home / "log4j2.properties").write_text(_LOG4J)
        log4j = (self.home / "log4j2.properties").resolve()
        heap = "-Xmx1g" if self.replication == 1 else "-Xmx512m"  # three nodes share the machine
        java = ["java", "-Xms256m", heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{lib}/*"]  # fmt: skip
        if not (data / "meta.properties").exists():
            format_storage(java, props, self.cluster_id or new_cluster_id(), format_args)
            if format_args:
                (self.home / "scram.formatted").touch()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it
            )
        self.pid_file.write_text(str(self.proc.pid))

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the broker started by :meth:`start` answers a metadata request."""
        proc = self.proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise KafkaSetupError(
                    f"the broker exited with {proc.returncode}; see {self.log_file}:\n{self._log_tail()}"
                )
            if reachable(self.bootstrap, timeout_s=2):
                return
            time.sleep(0.5)
        self.down()
        raise KafkaSetupError(f"the broker did not answer within {timeout_s:.0f} s; see {self.log_file}")

    def down(self) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after a timeout); False if not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.2)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the broker (a lost instance: no controlled shutdown); waits until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def format_command(java: list[str], props: Path, cluster_id: str, extra: Sequence[str] = ()) -> list[str]:
    """The storage tool's command line. The id is joined to its option: one that begins with '-'
    (1 in 64 ids) would otherwise be read as an option, and the format would fail."""
    return [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "--config", str(props), *extra]


def format_storage(java: list[str], props: Path, cluster_id: str, extra: Sequence[str] = ()) -> None:
    """Format the KRaft storage of ``props``'s log.dirs with ``cluster_id`` (``extra``: more
    options, e.g. ``--add-scram``)."""
    fmt = subprocess.run(format_command(java, props, cluster_id, extra), capture_output=True, text=True)
    if fmt.returncode != 0:
        raise KafkaSetupError(f"formatting the KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")


@dataclass
class Cluster:
    """Three local KRaft nodes on ports P, P+1, P+2 (controllers on P+10.., SASL_SSL on P+20..),
    node ids 1, 2, 3, in ``home``/node-<id>. Helpers for tests: kill, start, leaders, coordinators."""

    home: Path
    port: int = DEFAULT_PORT
    size: int = CLUSTER_SIZE
    security: str = "none"
    brokers: dict[int, Broker] = field(init=False)

    def __post_init__(self) -> None:
        ids = range(1, self.size + 1)
        voters = ",".join(f"{i}@127.0.0.1:{self.port + CONTROLLER_OFFSET + i - 1}" for i in ids)
        id_file = self.home / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.exists() else None
        self.brokers = {
            i: Broker(
                self.home / f"node-{i}",
                self.port + i - 1,
                node_id=i,
                controller_port=self.port + CONTROLLER_OFFSET + i - 1,
                voters=voters,
                replication=min(3, self.size),
                security=self.security,
                secure_port=self.port + SECURE_OFFSET + i - 1,
                secrets_dir=self.home,
                cluster_id=cluster_id,
            )
            for i in ids
        }

    @staticmethod
    def exists(home: Path) -> bool:
        """True when ``home`` holds a cluster (rather than one broker)."""
        return (home / "node-1").is_dir()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    @property
    def secure_bootstrap(self) -> str:
        return ",".join(b.secure_bootstrap for b in self.brokers.values())

    def credentials(self) -> Credentials:
        return ensure_credentials(self.home)

    def up(self) -> list[int]:
        """Start the brokers that are not running (all at once: a node waits for a quorum of
        voters before it answers), then wait until every broker is registered. Returns the ids
        started."""
        self.home.mkdir(parents=True, exist_ok=True)
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(new_cluster_id())
        for broker in self.brokers.values():
            broker.cluster_id = id_file.read_text().strip()
        started = [i for i, b in self.brokers.items() if b.pid() is None]
        for i in started:
            self.brokers[i].start()
        for i in started:
            self.brokers[i].wait_ready()
        self.wait_registered()
        return started

    def down(self) -> list[int]:
        """Stop every running broker; returns their ids."""
        return [i for i, b in self.brokers.items() if b.down()]

    def kill(self, broker_id: int) -> None:
        """SIGKILL one broker."""
        self.brokers[broker_id].kill()

    def start(self, broker_id: int, wait: bool = True) -> None:
        """Start one broker again (with ``wait``: until the cluster counts it again)."""
        broker = self.brokers[broker_id]
        broker.start()
        if wait:
            broker.wait_ready()
            self.wait_registered()

    def stop(self, broker_id: int) -> None:
        """Stop one broker cleanly (controlled shutdown: its leaderships move first)."""
        self.brokers[broker_id].down()

    def running(self) -> list[int]:
        return [i for i, b in self.brokers.items() if b.pid() is not None]

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _quiet}
        return AdminClient(settings)

    def wait_registered(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the metadata lists every running broker."""
        want = set(self.running())
        deadline = time.monotonic() + timeout_s
        admin = self.admin()
        while time.monotonic() < deadline:
            try:
                if want <= set(admin.list_topics(timeout=5).brokers):
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise KafkaSetupError(f"brokers {sorted(want)} did not all register within {timeout_s:.0f} s")

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> the id of the broker leading it (-1 while none does)."""
        meta = self.admin().list_topics(topic, timeout=10).topics[topic]
        return {p: m.leader for p, m in meta.partitions.items()}

    def leader_of(self, topic: str, partition: int) -> int:
        return self.leaders(topic)[partition]

    def in_sync(self, topic: str) -> dict[int, list[int]]:
        """partition -> the ids of its in-sync replicas."""
        meta = self.admin().list_topics(topic, timeout=10).topics[topic]
        return {p: list(m.isrs) for p, m in meta.partitions.items()}

    def coordinator(self, group: str) -> int:
        """The id of the broker coordinating the consumer group ``group``."""
        admin = self.admin()  # alive until the answer came: a dropped client never completes its futures
        (future,) = admin.describe_consumer_groups([group], request_timeout=10).values()
        return int(future.result(timeout=30).coordinator.id)

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The id of the broker coordinating ``transactional_id``: the leader of its partition of
        __transaction_state (Java's String.hashCode, as the broker computes it)."""
        topic = "__transaction_state"
        partitions = len(self.admin().list_topics(topic, timeout=10).topics[topic].partitions)
        if not partitions:
            raise KafkaSetupError("no transactional producer has used the cluster yet: no coordinator")
        return self.leader_of(topic, (_java_hash(transactional_id) & 0x7FFFFFFF) % partitions)

    def status(self) -> list[str]:
        """One line per broker: ``broker <id> 127.0.0.1:<port> pid <pid> running`` (or stopped)."""
        lines = []
        for i, b in self.brokers.items():
            pid = b.pid()
            state = "running" if pid is not None else "stopped"
            lines.append(f"broker {i} {b.bootstrap} pid {pid if pid is not None else '-'} {state}")
        return lines


def _java_hash(text: str) -> int:
    data, h = text.encode("utf-16-be"), 0
    for i in range(0, len(data), 2):  # over UTF-16 code units, as Java's String.hashCode
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


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
