"""The eventfleet benchmark: contenders side by side on the same data, against a real broker.

    python bench/run.py [--events 2000000] [--repeat 3] [--only raw,naive,...] [--port 9092] [--pg-dsn DSN]
                        [--registry-port 8081] [--writer-versions 2] [--tag NAME]

Produces N events of the example schema once (8 partitions, fixed seed), then runs each contender
on them with a fresh consumer group, --repeat times, and reports the median: events/s from the
first message to the last result being done (for eventfleet: durable in the sink), CPU seconds
per million events (user+sys of the consuming processes, start-up included), and peak RSS.
It checks that the contenders agree on the aggregates, and writes bench/results/<time>.json.
eventfleet-1-postgres writes to PostgreSQL: --pg-dsn, else a throwaway local server (fsync on)
started for the run and removed after it.

The -registry contenders read the same events framed for a schema registry (Confluent wire
format: 0x00, the schema id, the Avro body), produced once to a second topic by two interleaved
writer versions (the second moves a field and adds one with a default; --writer-versions 1: the
example schema only), from the local registry on --registry-port: started for the run (and
stopped after it) when none answers there. --tag NAME writes bench/results/NAME-<time>.json
instead, which `make bench-report` leaves out (for side experiments).
"""

import argparse
import hashlib
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import tomli_w
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import chosen_contenders, local_broker, machine, print_medians  # noqa: E402
from consumer import config  # noqa: E402
from consumer.dev import kafka as devkafka  # noqa: E402
from consumer.dev import postgres as devpostgres  # noqa: E402
from consumer.dev import registry as devregistry  # noqa: E402
from consumer.produce import events as event_stream  # noqa: E402
from consumer.produce import framed_encoder, produce  # noqa: E402
from consumer.sinks import open_sink  # noqa: E402

CONTENDERS = (
    "raw",
    "naive",
    "quix",
    "eventfleet-1",
    "eventfleet-2",
    "eventfleet-1-postgres",
    "eventfleet-1-kafka",
    "naive-registry",
    "quix-registry",
    "eventfleet-1-registry",
    "eventfleet-1-sketches",
    "quix-sketches",
)
SKETCH_METRICS = {"users": "distinct:user_id", "price": "quantiles:price_micros"}
"""What the -sketches contenders add to the example pipeline: a distinct count and quantiles."""
QUIX_VENV = ROOT / "bench" / ".venv-quix"
QUIX_REQUIREMENTS = ["quixstreams==3.28.1", "fastavro"]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the same event times every run
MAX_DELAY_MS = 20_000  # out-of-order events stay within the 30 s grace: every contender agrees
TIMEOUT_S = 1800.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    ap.add_argument("--port", type=int, default=devkafka.DEFAULT_PORT)
    ap.add_argument("--pg-dsn", help="PostgreSQL for eventfleet-1-postgres (default: a throwaway local server)")
    ap.add_argument("--registry-port", type=int, default=devregistry.DEFAULT_PORT,
                    help="the local schema registry of the -registry contenders (started if none answers)")  # fmt: skip
    ap.add_argument("--writer-versions", type=int, choices=(1, 2), default=2,
                    help="writer versions of the framed values, interleaved")  # fmt: skip
    ap.add_argument("--tag", help="write bench/results/TAG-<time>.json (left out of the report)")
    args = ap.parse_args()
    only = chosen_contenders(ap, args.only, CONTENDERS)
    bootstrap = local_broker(args.port)
    if any(name.startswith("quix") for name in only):
        ensure_quix_venv()
    registry = None
    if any(name.endswith("-registry") for name in only):
        registry = devregistry.Registry(ROOT / devregistry.default_home(args.registry_port), args.registry_port)
        REG.url = registry.url
        if registry.answers():
            registry = None  # not ours: leave it running
        else:
            print(f"starting a local schema registry on 127.0.0.1:{args.registry_port} ...", flush=True)
            try:
                registry.up()
            except devregistry.RegistrySetupError as e:
                print(f"bench: {e}".replace("--port", "--registry-port"), file=sys.stderr)
                return 2
    if any(name.endswith("-postgres") for name in only):
        if args.pg_dsn:
            PG.dsn = args.pg_dsn
        else:
            PG.server = devpostgres.Server.temporary(fsync=True)  # durable commits, like SQLite's synchronous=FULL
            PG.server.up()
            PG.dsn = PG.server.dsn
    try:
        return bench(args, only, bootstrap)
    finally:
        if PG.server is not None:
            PG.server.remove()
        if registry is not None:
            registry.down()


def bench(args: argparse.Namespace, only: list[str], bootstrap: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="eventfleet-bench-"))
    run_id = time.strftime("%Y%m%d-%H%M%S")
    topic = f"bench-{run_id}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    pipeline_file = write_pipeline(work, bootstrap, topic, "bench-seed")
    print(f"producing {args.events:,} events to {topic} ({args.partitions} partitions) ...", flush=True)
    produce(config.load(pipeline_file), args.events, seed=7, start_ms=START_MS, max_delay_ms=MAX_DELAY_MS)
    framed_topic, framing = f"{topic}-framed", None
    if any(name.endswith("-registry") for name in only):
        admin.create_topics([NewTopic(framed_topic, args.partitions, 1)])[framed_topic].result(30)
        framed_file = write_pipeline(work, bootstrap, framed_topic, "bench-seed-framed", registry=REG.url)
        print(f"producing the same events framed for {REG.url} to {framed_topic} ...", flush=True)
        framing = produce_framed(config.load(framed_file), args.events, args.writer_versions)
    time.sleep(2)  # let the broker settle (log flushes) before the first measurement

    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in only}
    for rep in range(args.repeat):
        for name in only:
            group = f"{topic}-{name}-{rep}"
            source = framed_topic if name.endswith("-registry") else topic
            result = RUNNERS[name](work, bootstrap, source, group, args.events)
            runs[name].append(result)
            print(
                f"  [{rep + 1}/{args.repeat}] {name:21s} {result['events_per_s']:>10,.0f} events/s  "
                f"{result['cpu_s_per_m']:6.2f} CPU-s/M  {result['rss_mb']:6.0f} MB",
                flush=True,
            )
    agreement = check_agreement(runs)
    summary = {name: median_of(rs) for name, rs in runs.items()}
    print_table(summary, args.events)
    for line in agreement["notes"]:
        print(line)
    out = ROOT / "bench" / "results" / (f"{args.tag}-{run_id}.json" if args.tag else f"{run_id}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "run": run_id,
                "events": args.events,
                "partitions": args.partitions,
                "repeat": args.repeat,
                "machine": machine(),
                **({"framing": framing} if framing else {}),
                "summary": summary,
                "ratios": ratios(summary),
                "agreement": agreement,
                "runs": {n: [{k: v for k, v in r.items() if k != "rows"} for r in rs] for n, rs in runs.items()},
            },
            indent=1,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0 if agreement["ok"] else 1


# -- contenders ----------------------------------------------------------------------------


def run_script(
    python: str, script: str, work: Path, extra: list[str], bootstrap: str, topic: str, group: str, events: int
) -> dict[str, Any]:
    out = work / f"{group}.json"
    cmd = [
        python,
        str(ROOT / "bench" / "contenders" / script),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--events",
        str(events),
        "--out",
        str(out),
        *extra,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT / "bench" / "contenders")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed with {proc.returncode}")
    r = json.loads(out.read_text())
    return measured(events, r["first_message_at"], r["done_at"], [usage], r.get("rows") or r.get("windows"))


def run_naive_registry(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    extra = ["--registry", REG.url]
    return run_script(sys.executable, "naive.py", work, extra, bootstrap, topic, group, events)


def run_quix_registry(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    python = str(QUIX_VENV / "bin" / "python")
    return run_script(python, "quix_agg.py", work, ["--registry", REG.url], bootstrap, topic, group, events)


def run_raw(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    return run_script(sys.executable, "raw.py", work, [], bootstrap, topic, group, events)


def run_naive(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    schema = str(ROOT / "schemas" / "ad_event.avsc")
    return run_script(sys.executable, "naive.py", work, ["--schema", schema], bootstrap, topic, group, events)


def run_quix(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    schema = str(ROOT / "schemas" / "ad_event.avsc")
    python = str(QUIX_VENV / "bin" / "python")
    return run_script(python, "quix_agg.py", work, ["--schema", schema], bootstrap, topic, group, events)


def run_quix_sketches(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
    schema = str(ROOT / "schemas" / "ad_event.avsc")
    python = str(QUIX_VENV / "bin" / "python")
    extra = ["--schema", schema, "--sketches"]
    return run_script(python, "quix_agg.py", work, extra, bootstrap, topic, group, events)


@dataclass
class PgTarget:
    """The PostgreSQL of the -postgres contenders (set by main), and the server if we started it."""

    dsn: str | None = None
    server: devpostgres.Server | None = None


PG = PgTarget()


@dataclass
class RegistryTarget:
    """The schema registry of the -registry contenders (set by main)."""

    url: str = ""


REG = RegistryTarget()


def run_eventfleet(workers: int, sink: str = "sqlite", registry: bool = False, sketches: bool = False) -> Any:
    def run(work: Path, bootstrap: str, topic: str, group: str, events: int) -> dict[str, Any]:
        dsn = PG.dsn if sink == "postgres" else None
        server_cpu = PG.server.cpu_seconds() if dsn and PG.server else 0.0
        pipeline_file = write_pipeline(
            work, bootstrap, topic, group, dsn, sink, REG.url if registry else None, sketches=sketches
        )
        db = work / f"{group}.db"
        table = pg_table(group) if dsn else "ad_stats"
        logs = [work / f"{group}-worker-{i}.log" for i in range(workers)]
        procs = []
        for log in logs:
            with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
                cmd = [sys.executable, "-m", "consumer", "worker", "--config", str(pipeline_file)]
                procs.append(subprocess.Popen(cmd, stderr=stderr, cwd=ROOT))
        try:
            if sink == "kafka":
                done_at = wait_offsets_committed(bootstrap, group, topic, events, procs)
            else:
                done_at = wait_sink_complete(db, group, topic, events, procs, dsn=dsn, table=table)
        except BaseException:  # a worker failed or time ran out: stop the others, show why
            for p in procs:
                p.kill()
                p.wait()
            for log in logs:
                print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-5:]), file=sys.stderr)
            raise
        usages = []
        for p in procs:
            p.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(p.pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"a worker failed; see {logs}"
            usages.append(usage)
        if dsn and PG.server:  # the server's share of the work counts too (SQLite's is in the worker)
            server_cpu = PG.server.cpu_seconds() - server_cpu
        firsts = [float(m) for log in logs for m in re.findall(r"first message at ([\d.]+)", log.read_text())]
        if sink == "kafka":  # the output topic read with read_committed, the deltas combined
            columns, rows_out = open_sink(config.load(pipeline_file)).results()
            wanted = [columns.index(c) for c in COLUMNS]
            return measured(events, min(firsts), done_at, usages, [[r[i] for i in wanted] for r in rows_out])
        query = f"SELECT window_start, campaign_id, event_type, events, spend, min_price, max_price FROM {table}"
        if sketches:
            query = query.replace(" FROM", ", users, price_p50, price_p95, price_p99 FROM")
        rows = [list(r) for r in sink_query(db, dsn, query, ())]
        result = measured(events, min(firsts), done_at, usages, rows, server_cpu)
        if sketches and dsn is None:  # what a row costs in the sink: the sketches, and the whole file
            ((n, hll, kll),) = sink_query(
                db, None, f"SELECT count(*), avg(length(users_sketch)), avg(length(price_sketch)) FROM {table}", ()
            )
            result["sink_bytes_per_row"] = {
                "users_sketch": hll,
                "price_sketch": kll,
                "file": sum(f.stat().st_size for f in work.glob(f"{group}.db*")) / n,
            }
        return result

    return run


RUNNERS = {
    "raw": run_raw,
    "naive": run_naive,
    "quix": run_quix,
    "eventfleet-1": run_eventfleet(1),
    "eventfleet-2": run_eventfleet(2),
    "eventfleet-1-postgres": run_eventfleet(1, sink="postgres"),
    "eventfleet-1-kafka": run_eventfleet(1, sink="kafka"),
    "naive-registry": run_naive_registry,
    "quix-registry": run_quix_registry,
    "eventfleet-1-registry": run_eventfleet(1, registry=True),
    "eventfleet-1-sketches": run_eventfleet(1, sketches=True),
    "quix-sketches": run_quix_sketches,
}
COLUMNS = ("window_start", "campaign_id", "event_type", "events", "spend", "min_price", "max_price")


def pg_table(group: str) -> str:
    return "ad_stats_" + hashlib.sha256(group.encode()).hexdigest()[:12]


def sink_query(db: Path, dsn: str | None, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows from the contender's sink (``?`` placeholders): SQLite file, or PostgreSQL when dsn is set."""
    if dsn is None:
        with sqlite3.connect(db) as con:
            return con.execute(query, params).fetchall()
    import psycopg

    with psycopg.connect(dsn) as pg:
        return pg.execute(query.replace("?", "%s"), params).fetchall()


def write_pipeline(
    work: Path,
    bootstrap: str,
    topic: str,
    group: str,
    dsn: str | None = None,
    sink: str = "sqlite",
    registry: str | None = None,
    sketches: bool = False,
) -> Path:
    """The example pipeline (metrics on) on this topic, group and a fresh SQLite database, a
    fresh table in PostgreSQL when dsn is given, or a fresh output topic <group>.out with
    ``sink="kafka"``; with ``registry`` (a URL), for values framed by that schema registry
    (the example schema is the reader schema, the subject ``<topic>-value``); with ``sketches``,
    plus :data:`SKETCH_METRICS`."""
    doc = tomllib.loads((ROOT / "examples" / "ad-stats.toml").read_text())
    if sketches:
        doc["aggregate"]["metrics"].update(SKETCH_METRICS)
    doc["kafka"].update(bootstrap_servers=bootstrap, topics=[topic], group_id=group)
    doc["schema"]["path"] = str(ROOT / "schemas" / "ad_event.avsc")
    if registry is not None:
        doc["schema"]["registry"] = registry
    if dsn is None:
        doc["sink"]["path"] = str(work / f"{group}.db")
    else:
        doc["sink"] = {"type": "postgres", "dsn": dsn, "table": pg_table(group)}
    if sink == "kafka":
        doc["sink"] = {"type": "kafka", "topic": f"{group}.out"}
    doc["flush"]["interval"] = "1s"  # the results are durable at most 1 s after the last event
    path = work / f"{group}.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


PLACEMENTS = ("feed", "search", "story")


def writer_v2(v1: dict[str, Any]) -> dict[str, Any]:
    """The second writer version of the framed data: ``price_micros`` moved first and a field
    added with a default (``placement``), two of the changes Avro's resolution allows."""
    price = [f for f in v1["fields"] if f["name"] == "price_micros"]
    rest = [f for f in v1["fields"] if f["name"] != "price_micros"]
    added = {"name": "placement", "type": "string", "default": "feed"}
    return {**v1, "fields": [*price, *rest, added]}


def produce_framed(pipeline: config.Pipeline, count: int, versions: int = 2) -> dict[str, Any]:
    """The events ``produce`` writes for the schemaless topic (same seed, times, keys, hence
    partitions and order), framed for the pipeline's registry, written alternately by the
    pipeline's schema and by :func:`writer_v2` (both registered under the topic's subject), or
    all by the pipeline's schema when ``versions`` is 1."""
    assert pipeline.registry is not None
    topic = pipeline.kafka.topics[0]
    subject = pipeline.registry.subject_for(topic)
    v1 = dict(pipeline.schema)
    encoders = [framed_encoder(pipeline.registry, subject, w) for w in (v1, writer_v2(v1))[:versions]]
    stream = event_stream(pipeline, 7, START_MS, 2000.0, 0.02, MAX_DELAY_MS)  # produce()'s defaults
    key_field = pipeline.aggregate.group_by[0]
    producer = confluent_kafka.Producer(
        {
            **pipeline.kafka.client_settings(),
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    failed: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    for i in range(count):
        record = next(stream)
        version = i % versions
        if version:
            record["placement"] = PLACEMENTS[i % 3]
        value, key = encoders[version](record), str(record[key_field]).encode()
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 999:
            producer.poll(0)
    if producer.flush(60) or failed:
        raise SystemExit(f"producing the framed events failed: {failed[:1] or 'not delivered within 60 s'}")
    return {
        "topic": topic,
        "subject": subject,
        "writer_versions": versions,
        "registry": f"Apicurio Registry {devregistry.APICURIO_VERSION}",
    }


def wait_sink_complete(
    db: Path,
    group: str,
    topic: str,
    events: int,
    procs: list[subprocess.Popen[bytes]],
    dsn: str | None = None,
    table: str = "ad_stats",
) -> float:
    """The moment the sink's positions cover every event (PostgreSQL over one connection, so that
    the polling costs the server next to nothing)."""
    import psycopg

    query = f"SELECT coalesce(sum(next_offset), 0) FROM {table}_positions WHERE consumer_group = ? AND topic = ?"
    pg = psycopg.connect(dsn, autocommit=True) if dsn else None

    def done() -> int:
        try:
            if pg is not None:
                ((n,),) = pg.execute(query.replace("?", "%s"), (group, topic)).fetchall()
            else:
                ((n,),) = sink_query(db, None, query, (group, topic))
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return 0
        return int(n)

    try:
        return wait_done(done, events, procs)
    finally:
        if pg is not None:
            pg.close()


def wait_offsets_committed(
    bootstrap: str, group: str, topic: str, events: int, procs: list[subprocess.Popen[bytes]]
) -> float:
    """The kafka sink: the moment the group's committed offsets (committed in the same
    transactions as the output records) cover every event."""
    probe = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [confluent_kafka.TopicPartition(topic, p) for p in probe.list_topics(topic).topics[topic].partitions]

        def done() -> int:
            try:
                return sum(max(tp.offset, 0) for tp in probe.committed(parts, timeout=10))
            except confluent_kafka.KafkaException:
                return 0  # a transaction holds them: not yet

        return wait_done(done, events, procs)
    finally:
        probe.close()


def wait_done(done: Callable[[], int], events: int, procs: list[subprocess.Popen[bytes]]) -> float:
    """The moment ``done()`` (polled every 20 ms) reaches ``events``, while every worker runs."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if done() >= events:
            return time.time()
        if any(p.poll() is not None for p in procs):
            raise SystemExit("an eventfleet worker exited early")
        time.sleep(0.02)
    raise SystemExit("eventfleet did not finish in time")


def measured(
    events: int, first: float, done: float, usages: list[Any], rows: Any, extra_cpu_s: float = 0.0
) -> dict[str, Any]:
    cpu = sum(u.ru_utime + u.ru_stime for u in usages) + extra_cpu_s
    return {
        "events_per_s": events / (done - first),
        "seconds": done - first,
        "cpu_s": cpu,
        "cpu_s_per_m": cpu / events * 1e6,
        "rss_mb": sum(u.ru_maxrss for u in usages) / 1024,
        "rows": rows,
    }


# -- checks and reporting ---------------------------------------------------------------------


def check_agreement(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """naive and eventfleet must hold the same rows; quix the same rows for every window it closed."""

    def table(rows: list[Any]) -> dict[tuple[Any, ...], tuple[int, ...]]:
        out = {}
        for r in rows:
            if isinstance(r, dict):
                r = [
                    r["window_start"],
                    r["campaign_id"],
                    r["event_type"],
                    r["events"],
                    r["spend"],
                    r["min_price"],
                    r["max_price"],
                ]
            out[tuple(r[:3])] = tuple(r[3:7])  # the scalar metrics (the -sketches rows have more)
        return out

    notes, ok = [], True
    reference_name = next(
        (n for n in ("naive", "eventfleet-1", "eventfleet-2", *runs) if n in runs and n != "raw"), None
    )
    if reference_name is None:
        return {"ok": True, "notes": ["agreement: nothing to compare (no aggregating contender ran)"]}
    reference = table(runs[reference_name][0]["rows"])
    for name, rs in runs.items():
        if name == "raw":
            continue
        for i, r in enumerate(rs):
            got = table(r["rows"])
            if name.startswith("quix"):
                closed = {k[0] for k in got}
                expected = {k: v for k, v in reference.items() if k[0] in closed}
                same = got == expected
                if i == 0:
                    notes.append(
                        f"agreement: {name} closed {len(closed)} of {len({k[0] for k in reference})} windows; "
                        f"its {len(got):,} rows {'equal' if same else 'DIFFER from'} {reference_name}'s"
                    )
            else:
                same = got == reference
                if i == 0 and name != reference_name:
                    notes.append(
                        f"agreement: {name} {'equals' if same else 'DIFFERS from'} {reference_name} ({len(got):,} rows)"
                    )
            ok &= same
    notes += sketch_agreement(runs)
    return {"ok": ok, "notes": notes}


def sketch_agreement(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """eventfleet-1-sketches' estimates against quix-sketches' exact values, on the windows Quix
    closed: the distinct counts' largest relative error (HLL at lg_k 12: 1.6% standard error) and
    the quantiles' (KLL bounds the rank error, not the value's: a note, not a pass/fail check)."""
    if "eventfleet-1-sketches" not in runs or "quix-sketches" not in runs:
        return []
    estimated = {tuple(r[:3]): r[7:] for r in runs["eventfleet-1-sketches"][0]["rows"]}
    users_error, price_error, rows = 0.0, 0.0, 0
    for w in runs["quix-sketches"][0]["rows"]:
        got = estimated.get((w["window_start"], w["campaign_id"], w["event_type"]))
        if got is None:
            continue
        rows += 1
        users_error = max(users_error, abs(got[0] - w["users"]) / w["users"])
        for v, q in zip(got[1:], ("price_p50", "price_p95", "price_p99"), strict=True):
            price_error = max(price_error, abs(v - w[q]) / max(w[q], 1))
    return [
        f"sketches: over {rows:,} rows, eventfleet-1-sketches' distinct counts are within {users_error:.2%} of "
        f"the exact ones (quix-sketches), its quantiles within {price_error:.2%} of the exact values"
    ]


def median_of(rs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rs) for k in ("events_per_s", "seconds", "cpu_s_per_m", "rss_mb")}


def ratios(s: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    for a, b in (
        ("eventfleet-1", "naive"),
        ("eventfleet-1", "quix"),
        ("eventfleet-2", "eventfleet-1"),
        ("eventfleet-1", "raw"),
        ("eventfleet-1-postgres", "eventfleet-1"),
        ("eventfleet-1-postgres", "naive"),
        ("eventfleet-1-kafka", "eventfleet-1"),
        ("eventfleet-1-registry", "eventfleet-1"),
        ("eventfleet-1-registry", "naive-registry"),
        ("eventfleet-1-registry", "quix-registry"),
        ("eventfleet-1-sketches", "eventfleet-1"),
        ("eventfleet-1-sketches", "quix-sketches"),
    ):
        if a in s and b in s:
            out[f"{a}/{b}"] = s[a]["events_per_s"] / s[b]["events_per_s"]
    return out


def print_table(s: dict[str, dict[str, float]], events: int) -> None:
    columns = [
        ("events/s", "events_per_s", 12, ",.0f"),
        ("CPU-s per M", "cpu_s_per_m", 12, ".2f"),
        ("peak RSS MB", "rss_mb", 12, ".0f"),
    ]
    print_medians(s, f"{events:,} events", 22, columns, ratios(s))


def ensure_quix_venv() -> None:
    python = QUIX_VENV / "bin" / "python"
    if python.exists():
        return
    print(f"creating {QUIX_VENV.relative_to(ROOT)} for Quix Streams (it pins confluent-kafka < 2.13) ...")
    subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *QUIX_REQUIREMENTS], check=True)


if __name__ == "__main__":
    raise SystemExit(main())
