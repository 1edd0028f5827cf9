"""``eventfleet demo``: a local broker, a fresh topic, generated events, workers, results.

Each run gets its own topic, group and SQLite file under ``.eventfleet/demo/`` (named by the
run), so a demo never mixes with an earlier one and its pipeline file can be reused with
``eventfleet results --config``.

``--from-files``: the events do not come from ``eventfleet produce`` but from a log file. A writer
process appends them as JSON lines (writes that end mid-line) and rotates the file by rename a few
times, ``eventfleet tail`` follows it into the topic (the glob names only the live file: the
renamed ones are followed by their identity), and the workers aggregate the topic meanwhile.
"""

import argparse
import base64
import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from .. import config, summary
from ..dev import kafka as devkafka
from ..dev import registry as devregistry
from ..errors import EventfleetError, SinkError
from ..produce import events as generate_events
from ..produce import produce
from ..progress import Progress
from ..sinks import Sink, check_sink, open_sink
from .rows import write_rows

DEMO_DIR = Path(".eventfleet") / "demo"
CATCH_UP_TIMEOUT_S = 900.0
LOG_GENERATIONS = 5  # --from-files: the log is renamed away 4 times (app.log.1 .. app.log.4) while tailed
WRITE_LINES = 1000  # --from-files: lines per write batch; each batch is written in two cut mid-line


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="examples/ad-stats.toml", help="pipeline to demo")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=devkafka.DEFAULT_PORT, help="local broker port")
    p.add_argument("--dsn", help="a postgres pipeline's PostgreSQL instead of its sink.dsn (libpq connection string)")
    p.add_argument("--registry", nargs="?", const="local", metavar="URL",
                   help="frame values for a schema registry (default: a local one on 127.0.0.1:8081)")  # fmt: skip
    p.add_argument("--from-files", action="store_true",
                   help="the events as lines of a rotated log file, read by eventfleet tail")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    return demo(Path(args.config), args.events, args.partitions, args.workers, args.port, args.registry, args.dsn,
                args.from_files)  # fmt: skip


def demo(
    config_path: Path,
    count: int,
    partitions: int,
    workers: int,
    port: int,
    registry: str | None = None,
    dsn: str | None = None,
    from_files: bool = False,
) -> int:
    """Run the pipeline of ``config_path``, whatever its sink. ``registry``: frame the values for
    this schema registry URL ("local": a local registry on 127.0.0.1:8081, started if none answers
    there); ``dsn``: a postgres pipeline's PostgreSQL instead of its own; ``from_files``: the
    events reach the topic as lines of a rotated log file, through ``eventfleet tail``."""
    config.load(config_path)  # fail early, with the key and the fix
    bootstrap = f"127.0.0.1:{port}"
    if not devkafka.reachable(bootstrap, timeout_s=3):
        print(f"starting a local Kafka {devkafka.KAFKA_VERSION} on {bootstrap} (first time: Maven fetches the jars)")
        devkafka.Broker(devkafka.default_home(port), port).up()
    if registry == "local":
        registry = _local_registry()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    pipeline_file = _demo_pipeline(config_path, bootstrap, run_id, registry, dsn, from_files)
    pipeline = config.load(pipeline_file)
    if pipeline.sink.type == "postgres":  # the one sink on a server of its own: say how to start it
        try:
            check_sink(pipeline)
        except SinkError as e:
            raise SinkError(f"{e} (or pass eventfleet demo --dsn DSN)") from None
    topic = pipeline.kafka.topics[0]
    admin = AdminClient(pipeline.kafka.client_settings())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    print(f"topic {topic} with {partitions} partitions; pipeline {pipeline_file}")

    tail = None
    if from_files:  # the workers start meanwhile: they aggregate what the tailer commits
        tail = _start_tail(pipeline_file, run_id, count)
    else:
        produced = produce(pipeline, count, seed=42)
        print(f"produced {count:,} events in {produced.seconds:.1f} s")

    log_path = pipeline_file.with_name(f"{run_id}-fleet.log")
    summaries = pipeline_file.with_name(f"{run_id}-workers")  # each worker's summary when it stops
    summaries.mkdir()
    started = time.monotonic()
    with open(log_path, "wb") as log:  # the fleet keeps its own copy of the descriptor
        fleet = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(pipeline_file), "--workers", str(workers),
             "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, summary.SUMMARY_DIR_ENV: str(summaries.resolve())},
        )  # fmt: skip
    try:
        if tail is not None:
            tail.finish(count, fleet)
            _wait_counted(pipeline, count, partitions, [fleet])
        else:
            _wait_caught_up(pipeline, topic, [fleet])
        elapsed = time.monotonic() - started
        done_at = time.time()
    finally:
        if tail is not None:
            tail.stop()
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
        code = fleet.wait(120)
    if code:
        raise EventfleetError(f"the fleet exited with {code}; see {log_path}")

    with _reader(pipeline) as sink:
        columns, rows = sink.results()
        positions = sink.read_positions(pipeline.kafka.group_id, [(topic, p) for p in range(partitions)])
    late = sum(p.late_events for p in positions.values())
    invalid = sum(p.invalid_events for p in positions.values())
    counter = next((m.name for m in pipeline.aggregate.metrics if m.kind == "count"), None)
    counted = f"{sum(row[columns.index(counter)] for row in rows):,}" if counter else "?"
    print(f"\nfirst rows of {len(rows)} (eventfleet results --config {pipeline_file}):")
    write_rows(columns, rows[:12], "table", sys.stdout)
    print(f"\n{count:,} events: {counted} aggregated, {late:,} late (window closed, counted), {invalid:,} undecodable")
    who = f"{workers} worker" + ("s" if workers != 1 else "")
    if tail is not None:  # the workers waited for the tailer: their events/s would say how fast it was
        tail.report(count)
        print(f"{who}: every result durable {elapsed:.1f} s after they started; fleet log: {log_path}")
        return 0
    stopped = summary.read(summaries)
    firsts = [s.first_event_at for s in stopped if s.first_event_at is not None]
    busy = done_at - min(firsts) if firsts else elapsed
    print(
        f"{who}: {count / busy:,.0f} events/s from the first event consumed to every result durable "
        f"({busy:.1f} s); {elapsed:.1f} s end to end, incl. process start-up and the group join"
    )
    for s in stopped:
        print(f"  worker {s.worker_id}: {s.events:,} events at {s.events_per_s:,.0f} events/s (first to last event)")
    print(f"fleet log: {log_path}")
    return 0


def _local_registry() -> str:
    """The local schema registry's URL, started first if none answers on its default port."""
    local = devregistry.Registry(devregistry.default_home(devregistry.DEFAULT_PORT), devregistry.DEFAULT_PORT)
    if not local.answers():
        print(
            f"starting a local schema registry on 127.0.0.1:{devregistry.DEFAULT_PORT} (first time: Maven fetches it)"
        )
        local.up()
    return local.url


def _demo_pipeline(
    config_path: Path, bootstrap: str, run_id: str, registry: str | None, dsn: str | None, from_files: bool = False
) -> Path:
    """Copy the pipeline with this run's topic, group, broker and sink file, table or topic, and
    the schema registry the values are framed for; with ``from_files``, an [ingest] section that
    tails this run's log file into the topic."""
    doc = tomllib.loads(config_path.read_text())
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    doc["kafka"]["bootstrap_servers"] = bootstrap
    doc["kafka"]["topics"] = [f"{doc['kafka']['topics'][0]}-{run_id}"]
    doc["kafka"]["group_id"] = f"{doc['kafka']['group_id']}-{run_id}"
    doc["schema"]["path"] = os.path.relpath((config_path.parent / doc["schema"]["path"]).resolve(), DEMO_DIR.resolve())
    if registry is not None:
        doc["schema"]["registry"] = registry
    sink = doc["sink"]
    if sink["type"] == "postgres":  # a fresh table per run in the pipeline's database
        sink["table"] = f"{sink['table']}_{run_id.replace('-', '_')}"
        if dsn is not None:
            sink["dsn"] = dsn
    elif sink["type"] == "kafka":  # a fresh output topic per run on the demo's broker
        sink["topic"] = f"{sink['topic']}-{run_id}"
    else:
        sink["path"] = f"{run_id}.db"
    doc.setdefault("flush", {})["interval"] = "1s"
    if from_files:
        log_dir = (DEMO_DIR / f"{run_id}-logs").resolve()
        group_by = doc.get("aggregate", {}).get("group_by") or []
        doc["ingest"] = {
            "paths": [str(log_dir / "app.log")],  # the live file only: rotated ones are known by identity
            "format": "jsonl",
            "start": "beginning",
            "id": f"demo-{run_id}",
            "commit_interval": "500ms",
            **({"key": group_by[0]} if group_by else {}),
        }
    path = DEMO_DIR / f"{run_id}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def _wait_counted(pipeline: config.Pipeline, count: int, partitions: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until the sink has counted ``count`` events (in a window, late or undecodable). A
    topic written in transactions ends with commit markers that no worker position reaches: the
    count, not the end offsets, says when every line is in."""
    counts = [m.name for m in pipeline.aggregate.metrics if m.kind == "count"]
    if not counts:
        raise EventfleetError('--from-files counts the lines with a "count" metric: add events = "count" to '
                              "[aggregate.metrics]")  # fmt: skip
    topic = pipeline.kafka.topics[0]

    def done(sink: Sink) -> int:
        columns, rows = sink.results()
        counted = sum(row[columns.index(counts[0])] for row in rows)
        stored = sink.read_positions(pipeline.kafka.group_id, [(topic, p) for p in range(partitions)])
        return int(counted + sum(p.late_events + p.invalid_events for p in stored.values()))

    _poll(pipeline, count, done, procs, "the lines were counted", "not counted")


def _wait_caught_up(pipeline: config.Pipeline, topic: str, procs: list[subprocess.Popen[bytes]]) -> None:
    """Block until the sink's positions reach the end of every partition."""
    probe = Consumer({**pipeline.kafka.client_settings(), "group.id": "eventfleet-demo-probe"})
    try:
        meta = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta}
    finally:
        probe.close()

    def done(sink: Sink) -> int:
        stored = sink.read_positions(pipeline.kafka.group_id, [(topic, p) for p in ends])
        return sum(min(pos.next_offset, ends[p]) for (_, p), pos in stored.items())

    _poll(pipeline, sum(ends.values()), done, procs, "the topic was processed", "not caught up")


def _poll(
    pipeline: config.Pipeline,
    total: int,
    done: Callable[[Sink], int],
    procs: list[subprocess.Popen[bytes]],
    before: str,
    failed: str,
) -> None:
    """Poll ``done(sink)`` with a progress bar until it reaches ``total``; a worker that exits or
    the time running out is an error."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    with _reader(pipeline) as sink, Progress(total, "aggregate") as bar:
        while time.monotonic() < deadline:
            n = done(sink)
            bar.update(n - bar.n)
            if n >= total:
                return
            if any(p.poll() is not None for p in procs):
                raise EventfleetError(f"a worker exited before {before}; see its log")
            time.sleep(0.2)
    raise EventfleetError(f"{failed} within {CATCH_UP_TIMEOUT_S:.0f} s")


@contextmanager
def _reader(pipeline: config.Pipeline) -> Iterator[Sink]:
    """The pipeline's sink, for reading results and positions beside the fleet. The kafka sink's
    positions are its group's committed offsets: it reads them with a consumer of the group that
    never subscribes (so never joins)."""
    sink = open_sink(pipeline)
    reader = None
    try:
        if sink.positions_in_kafka:
            reader = Consumer({**pipeline.kafka.client_settings(), "group.id": pipeline.kafka.group_id})
            sink.use_consumer(reader)
        yield sink
    finally:
        sink.close()
        if reader is not None:
            reader.close()


# -- --from-files: the writer process and the tailer -------------------------------------------


def write_log(pipeline_file: str, log: str, count: int, generations: int, metrics_url: str) -> None:
    """The writer process: ``count`` events of the pipeline's schema as JSON lines appended to
    ``log``, each batch in two writes cut mid-line; renamed away ``generations - 1`` times as
    logrotate does (app.log -> app.log.1, app.log.1 -> app.log.2, ...). Before each rename it waits
    until the tailer has read a line of the live file: a file renamed before the tailer ever saw it
    would be, for a glob naming only the live file, a file it never knew."""
    pipeline = config.load(pipeline_file)
    path = Path(log)
    source = generate_events(pipeline, seed=42, start_ms=int(time.time() * 1000), events_per_s=2000)
    per_generation = -(-count // generations)
    written = 0
    for generation in range(generations):
        lines = min(per_generation, count - written)
        with open(path, "ab", buffering=0) as f:
            for start in range(0, lines, WRITE_LINES):
                batch = "".join(_json_line(next(source)) for _ in range(min(WRITE_LINES, lines - start))).encode()
                cut = len(batch) - 17  # the last line's end waits for the next write
                f.write(batch[:cut])
                f.write(batch[cut:])
        written += lines
        if generation < generations - 1 and written < count:
            _wait_metric(metrics_url, "eventfleet_tail_lines_read_total", written - lines + 1)
            for k in range(generation, 0, -1):
                path.with_name(f"{path.name}.{k}").rename(path.with_name(f"{path.name}.{k + 1}"))
            path.rename(path.with_name(f"{path.name}.1"))


def _json_line(record: dict[str, object]) -> str:
    # bytes as base64 text, as eventfleet tail reads them
    return json.dumps(record, separators=(",", ":"), default=lambda b: base64.b64encode(b).decode()) + "\n"


def _metric(url: str, name: str) -> float | None:
    """One unlabelled sample of the tailer's /metrics (None while it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    return float(found[1]) if found else 0.0


def _wait_metric(url: str, name: str, at_least: float, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = _metric(url, name)
        if value is not None and value >= at_least:
            return
        time.sleep(0.1)
    raise EventfleetError(f"{name} did not reach {at_least:,.0f} within {timeout_s:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class _TailRun:
    """The writer process and ``eventfleet tail`` of a --from-files demo."""

    tailer: subprocess.Popen[bytes]
    writer: multiprocessing.process.BaseProcess
    metrics: str
    log_dir: Path
    tail_log: Path
    started: float
    done: float = 0.0  # when the last line was committed
    written: float = 0.0  # when the writer process had written the last line (seen within 0.1 s)
    cpu_s: float = 0.0  # user + system CPU of the tailer process

    def finish(self, count: int, fleet: subprocess.Popen[bytes]) -> None:
        """Until the writer is done and every line is committed; then SIGTERM to the tailer."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        with Progress(count, "tail", unit="lines") as bar:
            while time.monotonic() < deadline:
                for proc, what in ((self.tailer, "eventfleet tail"), (fleet, "the fleet")):
                    if proc.poll() is not None:
                        where = self.tail_log.parent
                        raise EventfleetError(f"{what} exited with {proc.returncode}; see its log in {where}")
                if self.writer.exitcode not in (None, 0):
                    raise EventfleetError(f"the log writer failed with {self.writer.exitcode}")
                if self.writer.exitcode == 0 and not self.written:
                    self.written = time.monotonic()
                produced = _metric(self.metrics, "eventfleet_tail_lines_produced_total") or 0.0
                rejected = _metric(self.metrics, "eventfleet_tail_lines_rejected_total") or 0.0
                bar.update(int(produced + rejected) - bar.n)
                if produced + rejected >= count:
                    self.done = time.monotonic()
                    break
                time.sleep(0.1)
            else:
                raise EventfleetError(f"eventfleet tail did not commit {count:,} lines in time; see {self.tail_log}")
        self.writer.join(60)
        self.written = self.written or time.monotonic()
        self.tailer.send_signal(signal.SIGTERM)  # commit what was read, exit 0
        _, status, usage = os.wait4(self.tailer.pid, 0)
        self.tailer.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        if self.tailer.returncode != 0:
            raise EventfleetError(f"eventfleet tail exited with {self.tailer.returncode}; see {self.tail_log}")

    def stop(self) -> None:
        if self.writer.is_alive():
            self.writer.terminate()
        if self.tailer.poll() is None:
            self.tailer.send_signal(signal.SIGTERM)
            self.tailer.wait(60)

    def report(self, count: int) -> None:
        files = sorted(p.name for p in self.log_dir.iterdir())
        seconds = self.done - self.started
        behind = max(self.done - self.written, 0.0)
        print(
            f"eventfleet tail: {count:,} lines of {', '.join(files)} (renamed {len(files) - 1} times while read) "
            f"committed in {seconds:.1f} s, {count / seconds:,.0f} lines/s as the writer wrote them (the last "
            f"{behind:.1f} s after it); {self.cpu_s / count * 1e6:.2f} CPU-s per million lines; tail log: "
            f"{self.tail_log}"
        )


def _start_tail(pipeline_file: Path, run_id: str, count: int) -> _TailRun:
    """``eventfleet tail`` on the run's log folder, then the writer process once the tailer is ready."""
    doc = tomllib.loads(pipeline_file.read_text())
    log = Path(doc["ingest"]["paths"][0])  # as _demo_pipeline wrote it
    log.parent.mkdir(parents=True)
    port = _free_port()
    tail_log = pipeline_file.with_name(f"{run_id}-tail.log")
    with open(tail_log, "wb") as out:  # the tailer keeps its own copy of the descriptor
        tailer = subprocess.Popen(
            [sys.executable, "-m", "consumer", "tail", "--config", str(pipeline_file), "--metrics-port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    ready = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(ready, timeout=5):
                break
        except OSError:
            if tailer.poll() is not None or time.monotonic() > deadline:
                tailer.kill()
                raise EventfleetError(f"eventfleet tail did not become ready; see {tail_log}") from None
            time.sleep(0.1)
    metrics = f"http://127.0.0.1:{port}/metrics"
    writer = multiprocessing.get_context("spawn").Process(
        target=write_log,
        args=(str(pipeline_file), str(log), count, LOG_GENERATIONS, metrics),
        name="eventfleet-demo-writer",
    )
    started = time.monotonic()
    writer.start()
    print(f"writing {count:,} JSON lines to {log}, renamed away {LOG_GENERATIONS - 1} times; eventfleet tail "
          f"follows it into {doc['kafka']['topics'][0]}")  # fmt: skip
    return _TailRun(tailer, writer, metrics, log.parent, tail_log, started)
