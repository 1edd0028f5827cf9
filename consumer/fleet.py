"""The supervisor: N worker processes on one instance, restarted, watched, stopped cleanly.

``eventfleet run --workers N`` starts N ``eventfleet worker`` processes in the same consumer group
and then only watches them:

- a worker that exits unexpectedly is restarted at once, and again after an exponential backoff
  (tenacity's wait strategy) if it keeps failing (the count starts over after a run of STABLE_RUN_S),
  logged and counted;
- each worker writes a heartbeat byte to a pipe from its poll loop; one silent for longer than
  ``[fleet] watchdog_timeout`` (stuck in a sink call, deadlocked) is killed with SIGKILL and
  restarted, well before the broker would evict it (the protocol keeps that exact);
- a worker past ``[fleet] max_rss`` flushes, commits and exits with ``EXIT_RECYCLE``; it is
  replaced at once;
- SIGTERM/SIGINT: every worker is asked to stop (flush, commit, leave the group); after
  ``[fleet] shutdown_grace`` the rest are killed. Exit code 0 only if every worker stopped cleanly.
- SIGUSR1 is passed on to every worker (each dumps its threads' stacks to its log).

Workers die with the supervisor (PR_SET_PDEATHSIG), so killing an instance kills it whole.

Static membership (KIP-345): worker slot i joins the group as ``group.instance.id``
``<instance id>-<i>`` (``[fleet] instance_id``, else ``$EVENTFLEET_INSTANCE_ID``, else the host
name). A worker killed and restarted in its slot rejoins under the same id within the session
timeout and gets its partitions back at once, without a rebalance; on SIGTERM workers leave the
group, so their partitions move at once too. Two live members with one id fence each other: the
supervisor refuses to start beside another instance of the same id on this host, and stops
(exit 2) when the broker fenced one of its workers for a member elsewhere.
"""

import fcntl
import hashlib
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from .backoff import backoff_s
from .config import INSTANCE_ID, Pipeline
from .errors import EventfleetError
from .protocol import EXIT_FENCED, EXIT_RECYCLE, received

log = logging.getLogger(__name__)

STABLE_RUN_S = 60.0  # a worker that ran this long before it failed is restarted at once again
TWIN_FENCES = 3  # a slot fenced this often within TWIN_WINDOW_S has a twin elsewhere: stop the instance
TWIN_WINDOW_S = 60.0


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask and the cgroup (v2 or v1) CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    quota: float | None = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = q / p if q > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


@dataclass
class Slot:
    """One worker position in the fleet, and the process filling it."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    heartbeat_fd: int = -1
    last_beat: float = 0.0
    joined: bool = False
    failures: int = 0  # consecutive unexpected exits
    started_at: float = 0.0
    restart_at: float = 0.0
    exits: list[int] = field(default_factory=list)
    fenced_at: list[float] = field(default_factory=list)  # monotonic times of its fenced exits


class Supervisor:
    def __init__(
        self,
        pipeline: Pipeline,
        workers: int,
        metrics_port: int | None,
        extra_args: list[str],
        instance: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.fleet
        self.instance = instance  # None: no static membership
        self.fenced = False
        self.slots = [Slot(i) for i in range(workers)]
        self.metrics_port = pipeline.metrics_port if metrics_port is None else metrics_port
        self.extra_args = extra_args
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.server: ThreadingHTTPServer | None = None
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="eventfleet-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)  # before prometheus is imported

    # -- life cycle -----------------------------------------------------------------------------

    def listen(self) -> None:
        """Bind the metrics port, first of all: a port taken stops start-up before any worker joins."""
        from .http import serve

        fix = "Choose a free one with --metrics-port N or [metrics] port = N in the pipeline (0 turns it off)"
        self.server = serve(self.metrics_port, self.healthy, self.ready, fix=fix) if self.metrics_port else None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def run(self) -> int:
        from . import metrics

        self.metrics = metrics
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGUSR1, self._forward)
        server = self.server
        log.info(
            "supervisor started: %d workers, group %s, metrics %s",
            len(self.slots),
            self.pipeline.kafka.group_id,
            f"on :{self.metrics_port}" if server else "off",
        )
        for slot in self.slots:
            self._start(slot)
        try:
            while not self.stopping:
                self._watch(timeout_s=0.5)
            return self._shutdown()
        finally:
            self.close()

    def _start(self, slot: Slot) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        cmd = [sys.executable, "-m", "consumer", *self.extra_args, "worker", "--config", str(self.pipeline.source),
               "--worker-id", str(slot.index), "--heartbeat-fd", str(write_fd)]  # fmt: skip
        if self.instance is not None:  # the slot's id: the same across restarts of its worker
            cmd += ["--group-instance-id", f"{self.instance}-{slot.index}"]
        slot.proc = subprocess.Popen(cmd, pass_fds=(write_fd,))
        os.close(write_fd)
        slot.heartbeat_fd = read_fd
        slot.last_beat = slot.started_at = time.monotonic()
        slot.joined = False
        self.selector.register(read_fd, selectors.EVENT_READ, slot)
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _watch(self, timeout_s: float) -> None:
        """Read heartbeats, reap exits, restart and kill as the rules say."""
        for key, _ in self.selector.select(timeout_s):
            slot: Slot = key.data
            try:
                data = os.read(slot.heartbeat_fd, 4096)
            except BlockingIOError:
                continue
            alive, joined = received(data)
            if alive:
                slot.last_beat = time.monotonic()
                slot.joined = slot.joined or joined
        now = time.monotonic()
        for slot in self.slots:
            if slot.proc is None:
                if not self.stopping and now >= slot.restart_at:
                    self._start(slot)
                continue
            code = slot.proc.poll()
            if code is None:
                silent = now - slot.last_beat
                if silent > self.settings.watchdog_timeout_s:
                    log.error("worker %d (pid %d) silent for %.0f s: killing it", slot.index, slot.proc.pid, silent)
                    self.metrics.WATCHDOG_KILLS.inc()
                    slot.proc.kill()
                    slot.proc.wait()
                    self._exited(slot, -signal.SIGKILL)
                continue
            self._exited(slot, code)

    def _exited(self, slot: Slot, code: int) -> None:
        assert slot.proc is not None
        self.selector.unregister(slot.heartbeat_fd)
        os.close(slot.heartbeat_fd)
        self.metrics.mark_process_dead(slot.proc.pid)
        slot.proc = None
        slot.exits.append(code)
        if self.stopping:
            return
        if code == EXIT_FENCED and self._twin(slot):
            return
        if code == EXIT_RECYCLE:
            slot.failures = 0
            delay = 0.0
            log.info("worker %d recycled (memory guard); replacing it", slot.index)
        elif code == EXIT_FENCED:
            delay = 0.0
        else:
            if time.monotonic() - slot.started_at >= STABLE_RUN_S:
                slot.failures = 0
            slot.failures += 1
            # The first restart is immediate: back within the session, the slot's static member gets
            # its partitions again without a rebalance. A crash loop backs off from the second.
            delay = 0.0 if slot.failures == 1 else backoff_s(slot.failures - 1)
            log.error("worker %d exited with %s; restart %d in %.1f s", slot.index, code, slot.failures, delay)
        reason = {EXIT_RECYCLE: "recycle", EXIT_FENCED: "fenced"}.get(code, "crash")
        self.metrics.WORKER_RESTARTS.labels(reason).inc()
        slot.restart_at = time.monotonic() + delay

    def _twin(self, slot: Slot) -> bool:
        """A fenced worker: restart it, unless its slot keeps being fenced (then stop the instance)."""
        now = time.monotonic()
        slot.fenced_at = [t for t in slot.fenced_at if now - t < TWIN_WINDOW_S] + [now]
        member = f"{self.instance}-{slot.index}"
        if len(slot.fenced_at) < TWIN_FENCES:
            # Once is what a group coordinator's failover can do to a static member's rejoin.
            log.warning("worker %d was fenced (group.instance.id %s); restarting it. Fenced %d times within %.0f s, "
                        "the instance stops: another instance would be using this id",
                        slot.index, member, TWIN_FENCES, TWIN_WINDOW_S)  # fmt: skip
            return False
        # Restarting again would fence the other member in turn, and so on.
        log.error("worker %d was fenced %d times within %.0f s by another member of group %s with group.instance.id "
                  "%s: stopping this instance. Give every instance its own id ([fleet] instance_id or "
                  "EVENTFLEET_INSTANCE_ID)", slot.index, len(slot.fenced_at), TWIN_WINDOW_S,
                  self.pipeline.kafka.group_id, member)  # fmt: skip
        self.stopping = self.fenced = True
        return True

    def _shutdown(self) -> int:
        """Ask every worker to stop, wait up to the grace period, kill the rest."""
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        clean = True
        for slot in self.slots:
            if slot.proc is None:
                continue
            try:
                code = slot.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within the grace period: killing it", slot.index)
                slot.proc.kill()
                code = slot.proc.wait()
            clean &= code == 0
            self._exited(slot, code)
        if self.fenced:
            log.info("supervisor stopped: a worker was fenced")
            return 2
        log.info("supervisor stopped %s", "cleanly" if clean else "with errors")
        return 0 if clean else 1

    # -- signals and health ---------------------------------------------------------------------

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping every worker", signal.Signals(signum).name)
        self.stopping = True

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.send_signal(signum)

    def healthy(self) -> tuple[bool, str]:
        """Liveness: every worker slot has a process that heartbeated recently (or is restarting)."""
        now = time.monotonic()
        late = [
            s.index for s in self.slots if s.proc is not None and now - s.last_beat > self.settings.watchdog_timeout_s
        ]
        return (not late, f"workers not heartbeating: {late}" if late else "ok")

    def ready(self) -> tuple[bool, str]:
        """Readiness: every worker has joined the consumer group."""
        waiting = [s.index for s in self.slots if not (s.proc is not None and s.joined)]
        return (not waiting, f"workers not in the group yet: {waiting}" if waiting else "ok")


def instance_id(pipeline: Pipeline) -> str | None:
    """This instance's id for static membership (None: off): [fleet] instance_id, else
    $EVENTFLEET_INSTANCE_ID, else the host name (unique per pod, container or machine)."""
    if not pipeline.fleet.static_membership:
        return None
    if pipeline.fleet.instance_id:  # checked with the config
        return pipeline.fleet.instance_id
    from_env = os.environ.get("EVENTFLEET_INSTANCE_ID")
    if from_env and not INSTANCE_ID.match(from_env):
        raise EventfleetError(
            f"EVENTFLEET_INSTANCE_ID={from_env!r} is not an instance id: use letters, digits, '.', '_' and '-'"
        )
    return from_env or socket.gethostname()


def claim_instance(pipeline: Pipeline, instance: str) -> int:
    """Hold a lock file for (cluster, group, instance id) on this host for the supervisor's life,
    so that a second ``eventfleet run`` with the same id here stops at once instead of fencing
    this one's workers (and being fenced in turn). Returns the lock's descriptor."""
    kafka = pipeline.kafka
    key = hashlib.sha256(f"{kafka.bootstrap_servers}\0{kafka.group_id}\0{instance}".encode()).hexdigest()[:20]
    path = Path(tempfile.gettempdir()) / f"eventfleet-instance-{key}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise EventfleetError(
            f"another eventfleet run on this host (pid {holder}) is instance {instance!r} of group "
            f"{kafka.group_id!r}: their workers would fence each other (static membership). Give each instance its "
            "own id: set EVENTFLEET_INSTANCE_ID or [fleet] instance_id"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def run(pipeline: Pipeline, workers: int | None, metrics_port: int | None, extra_args: list[str]) -> int:
    instance = instance_id(pipeline)
    supervisor = Supervisor(pipeline, workers or available_cpus(), metrics_port, extra_args, instance)
    from .source import check_consumer_settings, check_topics  # only now: prometheus_client reads the env

    try:
        supervisor.listen()
        check_consumer_settings(pipeline)  # a bad [kafka.config] likewise
        check_topics(pipeline)  # a missing topic or broker is a start-up error, not a crash loop
        if instance is not None:
            claim_instance(pipeline, instance)  # held until this process exits
    except BaseException:
        supervisor.close()
        raise
    if instance is not None:
        log.info("static membership: workers join as group.instance.id %s-<slot>", instance)
    return supervisor.run()
