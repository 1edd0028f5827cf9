"""The tail benchmark: one growing file of JSON lines into Kafka, three tailers side by side.

    python bench/tail.py [--lines 2000000] [--repeat 1] [--only eventfleet,naive,rsyslog] [--port 9092]
                         [--tail-cmd "python -m consumer tail"]

The file: --lines JSON lines of the example schema (schemas/ad_event.avsc, the generator of
`eventfleet produce`), the line number in each event_id. Half of them are in the file when a
contender starts; a writer process then appends the other half in 64 KiB writes that end in the
middle of a line (as an application's buffered logger does), as fast as the disk takes them, so
every contender follows a file that grows under it and meets partial last lines.

Contenders, each on a topic of its own (one partition) of the local broker:
  eventfleet  `eventfleet tail` (--tail-cmd): Avro records of the pipeline's schema, the records and
              the file positions in one Kafka transaction (exactly once)
  naive       bench/contenders/tail_naive.py: readline, json.loads, fastavro, produce; no guarantees
  rsyslog     rsyslogd's imfile + omkafka (Debian's rsyslog and rsyslog-kafka, installed with
              apt-get when missing): C, the raw lines, no Avro, at least once

Measured per contender: lines/s from its start to the moment the last line became readable in
the topic (for read_committed consumers: eventfleet's lines count once committed), CPU seconds
per million lines (user+sys of the contender's processes, from wait4 after SIGTERM: start-up and
the idle follow included), peak RSS (VmHWM). Each is checked for
lost and duplicated lines: the topic is read back with read_committed, every value decoded (Avro,
or JSON for rsyslog) and its line number counted. Results go to bench/results/tail-<time>.json.
"""

import argparse
import io
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
import tomli_w
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import chosen_contenders, local_broker, machine, print_medians  # noqa: E402
from consumer import config  # noqa: E402
from consumer.dev import kafka as devkafka  # noqa: E402
from consumer.produce import events  # noqa: E402

CONTENDERS = ("eventfleet", "naive", "rsyslog")
SCHEMA = ROOT / "schemas" / "ad_event.avsc"
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the same lines every run
WRITE_BYTES = 64 * 1024  # the writer's append size: most writes end mid-line
IDLE_DONE_S = 3.0  # the topic has all the lines and has not grown for this long: the contender is done
IDLE_GIVE_UP_S = 30.0  # the topic has not grown for this long short of the lines: lines were lost
TIMEOUT_S = 1800.0
RSYSLOG_PACKAGES = ("rsyslog", "rsyslog-kafka")
RSYSLOG_MODULES = Path("/usr/lib/x86_64-linux-gnu/rsyslog")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    ap.add_argument("--port", type=int, default=devkafka.DEFAULT_PORT, help="local broker port (started if down)")
    ap.add_argument(
        "--tail-cmd",
        default=f"{shlex.quote(sys.executable)} -m consumer tail",
        help="the eventfleet tail command (e.g. another checkout's: /path/.venv/bin/python -m consumer tail)",
    )
    args = ap.parse_args()
    only = chosen_contenders(ap, args.only, CONTENDERS)
    bootstrap = local_broker(args.port)
    if "rsyslog" in only:
        ensure_rsyslog()

    work = Path(tempfile.mkdtemp(prefix="eventfleet-tail-bench-"))
    run_id = time.strftime("%Y%m%d-%H%M%S")
    try:
        print(f"writing {args.lines:,} JSON lines ...", flush=True)
        lines_file = work / "lines.jsonl"
        write_lines(lines_file, args.lines)
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in only}
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for rep in range(args.repeat):
            for name in only:
                topic = f"tail-bench-{run_id}-{name}-{rep}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                r = run_contender(name, work / f"{name}-{rep}", lines_file, args.lines, bootstrap, topic, args.tail_cmd)
                runs[name].append(r)
                print(
                    f"  [{rep + 1}/{args.repeat}] {name:10s} {r['lines_per_s']:>10,.0f} lines/s  "
                    f"{r['cpu_s_per_m']:6.2f} CPU-s/M  {r['rss_mb']:5.0f} MB  lost {r['lost']:,}  "
                    f"duplicated {r['duplicated']:,}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: median_of(rs) for name, rs in runs.items()}
    print_table(summary, args.lines)
    out = ROOT / "bench" / "results" / f"tail-{run_id}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "tail",
                "run": run_id,
                "lines": args.lines,
                "repeat": args.repeat,
                "file": "half written before the start, half appended in 64 KiB writes while the contender reads",
                "machine": {**machine(), "rsyslog": rsyslog_version() if "rsyslog" in only else None},
                "tail_cmd": args.tail_cmd if "eventfleet" in only else None,
                "summary": summary,
                "ratios": ratios(summary),
                "contenders": runs,
            },
            indent=1,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0 if all(r["lost"] == 0 for rs in runs.values() for r in rs) else 1


# -- the file --------------------------------------------------------------------------------


def write_lines(path: Path, count: int) -> None:
    """``count`` JSON lines of the example schema; event_id carries the line number."""
    pipeline = config.load(ROOT / "examples" / "ad-stats.toml")
    gen = events(pipeline, seed=11, start_ms=START_MS, events_per_s=2000)
    with open(path, "w", encoding="utf-8") as f:
        for n in range(count):
            record = next(gen)
            record["event_id"] = f"L{n:09d}"
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def line_number(event_id: str) -> int:
    return int(event_id[1:])


class Writer:
    """The growing file: the first half copied before the contender starts, the second half
    appended by a child process in WRITE_BYTES writes (ending mid-line) once it has."""

    def __init__(self, source: Path, target: Path) -> None:
        data = source.read_bytes()
        half = data.index(b"\n", len(data) // 2) + 1
        target.write_bytes(data[:half])
        self.source, self.target, self.offset = source, target, half
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        code = (
            "import sys\n"
            "src, dst, offset, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
            "data = open(src, 'rb').read()[offset:]\n"
            "with open(dst, 'ab', buffering=0) as f:\n"
            "    for i in range(0, len(data), size):\n"
            "        f.write(data[i:i + size])\n"
        )
        argv = [sys.executable, "-c", code, str(self.source), str(self.target), str(self.offset), str(WRITE_BYTES)]
        self.proc = subprocess.Popen(argv)

    def wait(self) -> None:
        assert self.proc is not None
        if self.proc.wait(600) != 0:
            raise SystemExit("the writer failed")


# -- contenders ------------------------------------------------------------------------------


def run_contender(
    name: str, work: Path, lines_file: Path, lines: int, bootstrap: str, topic: str, tail_cmd: str
) -> dict[str, Any]:
    work.mkdir(parents=True)
    log_file = work / "app.log"
    writer = Writer(lines_file, log_file)
    argv, decode = CONTENDERS_SETUP[name](work, log_file, bootstrap, topic, tail_cmd)
    log = work / "contender.log"
    with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
        started = time.time()
        # not in the repository: `python -m consumer` of another checkout (--tail-cmd) would import this one's
        proc = subprocess.Popen(argv, cwd=work, stdout=stderr, stderr=stderr)
    writer.start()
    try:
        writer.wait()
        done_at = wait_done(bootstrap, topic, lines, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        print(f"--- {name} (last lines of its log)\n" + "\n".join(log.read_text().splitlines()[-10:]), file=sys.stderr)
        raise
    peak_rss_mb = vm_hwm_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"--- {name} exited with {code}:\n" + "\n".join(log.read_text().splitlines()[-10:]), file=sys.stderr)
    check = read_back(bootstrap, topic, lines, decode)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "lines_per_s": lines / (done_at - started),
        "seconds": done_at - started,
        "cpu_s": cpu,
        "cpu_s_per_m": cpu / lines * 1e6,
        "rss_mb": peak_rss_mb,
        "exit_code": code,
        **{k: check[k] for k in ("records", "lost", "lost_lines", "duplicated", "undecodable")},
    }


def vm_hwm_mb(pid: int) -> float:
    """The process's peak RSS (VmHWM), which exec resets: wait4's ru_maxrss would count the
    harness's memory that the child had between fork and exec."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.M)
    return int(found[1]) / 1024 if found else float("nan")


Setup = Callable[[Path, Path, str, str, str], tuple[list[str], Callable[[bytes], int]]]


def avro_decoder() -> Callable[[bytes], int]:
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))

    def decode(value: bytes) -> int:
        record = fastavro.schemaless_reader(io.BytesIO(value), schema, None)
        return line_number(record["event_id"])  # type: ignore[call-overload, index]

    return decode


def json_decoder(value: bytes) -> int:
    return line_number(json.loads(value)["event_id"])


def setup_eventfleet(work: Path, log_file: Path, bootstrap: str, topic: str, tail_cmd: str) -> Any:
    doc = tomllib.loads((ROOT / "examples" / "ad-stats.toml").read_text())
    doc["kafka"].update(bootstrap_servers=bootstrap, topics=[topic], group_id=f"{topic}-workers")
    doc["schema"]["path"] = str(SCHEMA)
    doc["sink"]["path"] = str(work / "unused.db")
    doc["ingest"] = {"paths": [str(log_file)], "format": "jsonl", "topic": topic, "key": "campaign_id",
                     "start": "beginning"}  # fmt: skip
    pipeline = work / "pipeline.toml"
    pipeline.write_text(tomli_w.dumps(doc))
    return [*shlex.split(tail_cmd), "--config", str(pipeline), "--metrics-port", "0"], avro_decoder()


def setup_naive(work: Path, log_file: Path, bootstrap: str, topic: str, tail_cmd: str) -> Any:
    script = ROOT / "bench" / "contenders" / "tail_naive.py"
    argv = [sys.executable, str(script), "--bootstrap", bootstrap, "--topic", topic, "--file", str(log_file),
            "--schema", str(SCHEMA), "--key", "campaign_id"]  # fmt: skip
    return argv, avro_decoder()


def setup_rsyslog(work: Path, log_file: Path, bootstrap: str, topic: str, tail_cmd: str) -> Any:
    """imfile (inotify) on the file, each line as it is (%msg%) to omkafka; its own work folder
    (imfile's state files), no other input, no other output."""
    state = work / "rsyslog"
    state.mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{state}" maxMessageSize="64k")\n'
        f'module(load="{RSYSLOG_MODULES}/imfile.so" mode="inotify")\n'
        f'module(load="{RSYSLOG_MODULES}/omkafka.so")\n'
        'template(name="line" type="string" string="%msg%")\n'
        f'input(type="imfile" file="{log_file}" tag="app" ruleset="kafka" freshStartTail="off")\n'
        'ruleset(name="kafka") {\n'
        f'  action(type="omkafka" broker=["{bootstrap}"] topic="{topic}" template="line"\n'
        '         confParam=["linger.ms=20"])\n'
        "}\n"
    )
    argv = ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")]
    return argv, json_decoder


CONTENDERS_SETUP: dict[str, Setup] = {
    "eventfleet": setup_eventfleet,
    "naive": setup_naive,
    "rsyslog": setup_rsyslog,
}


def ensure_rsyslog() -> None:
    """rsyslogd with its Kafka output, from Debian's packages (apt-get when missing)."""
    if shutil.which("rsyslogd") and (RSYSLOG_MODULES / "omkafka.so").exists():
        return
    print(f"installing {' '.join(RSYSLOG_PACKAGES)} with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *RSYSLOG_PACKAGES],
                   check=True, env=env)  # fmt: skip


def rsyslog_version() -> str:
    out = subprocess.run(["rsyslogd", "-v"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"rsyslogd\s+(\S+)", out)
    return m[1] if m else "?"


# -- completion and the check ------------------------------------------------------------------


def wait_done(bootstrap: str, topic: str, lines: int, proc: subprocess.Popen[bytes]) -> float:
    """Until the topic's end (for read_committed consumers: the last stable offset) holds at
    least every line and has stopped growing, or has stopped growing for IDLE_GIVE_UP_S short of
    them (lines were lost: read_back counts them). Returns when it last grew (polled every 50
    ms): the moment the last line became readable. The record timestamps cannot say it: omkafka
    stamps a record with the syslog message's time, in whole seconds."""
    probe = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-probe", "isolation.level": "read_committed"}
    )
    tp = confluent_kafka.TopicPartition(topic, 0)
    deadline = time.monotonic() + TIMEOUT_S
    last, since, grew_at = -1, time.monotonic(), time.time()
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the contender exited early with {proc.returncode}")
            end = probe.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            now = time.monotonic()
            if end != last:
                last, since, grew_at = end, now, time.time()
            elif (end >= lines and now - since >= IDLE_DONE_S) or now - since >= IDLE_GIVE_UP_S:
                return grew_at
            time.sleep(0.05)
    finally:
        probe.close()
    raise SystemExit(f"not done within {TIMEOUT_S:.0f} s")


def read_back(bootstrap: str, topic: str, lines: int, decode: Callable[[bytes], int]) -> dict[str, Any]:
    """Every committed record of the topic, decoded: how many lines are missing, how many came
    more than once, and how many values did not decode."""
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-check",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    seen = bytearray(lines)
    records = duplicated = undecodable = 0
    try:
        c.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        while True:
            batch = c.consume(10_000, 10.0)
            if not batch:
                raise SystemExit(f"reading {topic} back: nothing for 10 s before its end")
            eof = False
            for m in batch:
                if m.error():
                    if m.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    raise SystemExit(f"reading {topic} back: {m.error()}")
                records += 1
                try:
                    n = decode(m.value())
                except Exception:  # counted, not fatal: the check reports it
                    undecodable += 1
                    continue
                if 0 <= n < lines and seen[n]:
                    duplicated += 1
                elif 0 <= n < lines:
                    seen[n] = 1
            if eof:
                break
    finally:
        c.close()
    return {
        "records": records,
        "lost": lines - sum(seen),
        "lost_lines": [n for n, got in enumerate(seen) if not got][:10],  # the first ones, to say which
        "duplicated": duplicated,
        "undecodable": undecodable,
    }


# -- reporting -------------------------------------------------------------------------------


def median_of(rs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("lines_per_s", "seconds", "cpu_s_per_m", "rss_mb", "lost", "duplicated")
    return {k: statistics.median(r[k] for r in rs) for k in keys}


def ratios(s: dict[str, dict[str, float]]) -> dict[str, float]:
    """ "a/b" -> how many times b's CPU per line a's is (above 1: a needs less), and the speed ratio."""
    out = {}
    for a, b in (("eventfleet", "naive"), ("eventfleet", "rsyslog"), ("naive", "rsyslog")):
        if a in s and b in s:
            out[f"{a}/{b} cpu-efficiency"] = s[b]["cpu_s_per_m"] / s[a]["cpu_s_per_m"]
            out[f"{a}/{b} lines/s"] = s[a]["lines_per_s"] / s[b]["lines_per_s"]
    return out


def print_table(s: dict[str, dict[str, float]], lines: int) -> None:
    columns = [
        ("lines/s", "lines_per_s", 10, ",.0f"),
        ("CPU-s per M", "cpu_s_per_m", 12, ".2f"),
        ("RSS MB", "rss_mb", 7, ".0f"),
        ("lost", "lost", 6, ",.0f"),
        ("dup", "duplicated", 6, ",.0f"),
    ]
    print_medians(s, f"{lines:,} lines", 12, columns, ratios(s))


if __name__ == "__main__":
    raise SystemExit(main())
