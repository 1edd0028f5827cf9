"""Memory of one eventfleet worker: by distinct keys per window, and over a long steady run.

    python bench/memory.py keys [--keys 1000,100000,1000000] [--events 2000000]
    python bench/memory.py soak [--minutes 20] [--rate 20000]

``keys``: for each K, a topic where every window holds K distinct (campaign_id, event_type)
keys; one worker aggregates it; its peak RSS and the rows written are reported.
``soak``: events produced at a steady rate (event time = wall time) while one worker runs; its
RSS is sampled every 10 s. State is bounded by the keys touched per flush, so RSS must stay flat.
Results go to bench/results/memory-<mode>-<time>.json.
"""

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import wait_sink_complete, write_pipeline  # noqa: E402
from consumer import config  # noqa: E402
from consumer.decode import make_encoder  # noqa: E402
from consumer.dev import kafka as devkafka  # noqa: E402

TYPES = ("impression", "click", "conversion")
PARTITIONS = 8


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def produce_keys(bootstrap: str, topic: str, pipeline_file: Path, events: int, keys: int, window_ms: int) -> None:
    """``events`` events cycling through ``keys`` distinct keys per window, windows in order."""
    encode = make_encoder(dict(config.load(pipeline_file).schema))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "compression.type": "lz4"})  # fmt: skip
    start = 1_767_225_600_000
    per_window = max(keys, events // 4)  # a few windows, each with every key at least once
    for i in range(events):
        k = i % keys
        ts = start + (i // per_window) * window_ms + (i % per_window) * window_ms // per_window
        record = {"event_id": f"e{i}", "ts": ts,
                  "campaign_id": f"c{k // 3}", "ad_id": "a", "event_type": TYPES[k % 3], "user_id": i,
                  "country": "DE", "device": "mobile", "price_micros": i % 5000}  # fmt: skip
        while True:
            try:
                producer.produce(topic, encode(record), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(120)


def start_worker(pipeline_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "consumer", "worker", "--config", str(pipeline_file)],
                                stderr=stderr, cwd=ROOT)  # fmt: skip


def keys_mode(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    out = []
    for keys in [int(k) for k in args.keys.split(",")]:
        topic = f"mem-keys-{keys}-{int(time.time())}"
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        pipeline_file = write_pipeline(work, bootstrap, topic, topic)
        events = max(args.events, keys * 2)
        print(f"{keys:,} keys per window: producing {events:,} events ...", flush=True)
        produce_keys(bootstrap, topic, pipeline_file, events, keys, 60_000)
        proc = start_worker(pipeline_file, work / f"{topic}.log")
        peak = 0.0
        done = threading.Event()

        def sample(p: subprocess.Popen[bytes] = proc, done: threading.Event = done) -> None:
            nonlocal peak
            while not done.is_set() and p.poll() is None:
                peak = max(peak, rss_mb(p.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        wait_sink_complete(work / f"{topic}.db", topic, topic, events, [proc])
        done.set()
        sampler.join()
        proc.send_signal(signal.SIGTERM)
        _, _, usage = os.wait4(proc.pid, 0)
        with sqlite3.connect(work / f"{topic}.db") as con:
            (rows,) = con.execute("SELECT count(*) FROM ad_stats").fetchone()
        peak = max(peak, usage.ru_maxrss / 1024)
        print(f"  peak RSS {peak:,.0f} MB, {rows:,} rows", flush=True)
        out.append({"keys_per_window": keys, "events": events, "peak_rss_mb": round(peak, 1), "rows": rows})
    return {"mode": "keys", "results": out}


def soak_mode(args: argparse.Namespace, bootstrap: str, work: Path) -> dict[str, Any]:
    from consumer.produce import produce

    topic = f"mem-soak-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    pipeline_file = write_pipeline(work, bootstrap, topic, topic)
    count = int(args.minutes * 60 * args.rate)
    producing = threading.Thread(
        target=produce, args=(config.load(pipeline_file), count), kwargs={"rate": args.rate, "progress": False}
    )
    producing.start()
    proc = start_worker(pipeline_file, work / f"{topic}.log")
    samples = []
    started = time.monotonic()
    while producing.is_alive():
        time.sleep(10)
        samples.append((round(time.monotonic() - started), round(rss_mb(proc.pid), 1)))
        print(f"  {samples[-1][0]:5d} s  RSS {samples[-1][1]:7.1f} MB", flush=True)
    wait_sink_complete(work / f"{topic}.db", topic, topic, count, [proc])
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    rss = [s[1] for s in samples]
    settled = rss[len(rss) // 10 :]  # after the first tenth: warm-up (imports, first fetches)
    return {"mode": "soak", "minutes": args.minutes, "rate": args.rate, "events": count, "samples": samples,
            "rss_after_warmup_min_mb": min(settled), "rss_after_warmup_max_mb": max(settled),
            "rss_last_mb": rss[-1]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("keys", "soak"))
    ap.add_argument("--keys", default="1000,100000,1000000")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--port", type=int, default=devkafka.DEFAULT_PORT)
    args = ap.parse_args()
    bootstrap = f"127.0.0.1:{args.port}"
    if not devkafka.reachable(bootstrap, timeout_s=3):
        devkafka.Broker(ROOT / devkafka.default_home(args.port), args.port).up()
    work = Path(tempfile.mkdtemp(prefix="eventfleet-memory-"))
    result = keys_mode(args, bootstrap, work) if args.mode == "keys" else soak_mode(args, bootstrap, work)
    out = ROOT / "bench" / "results" / f"memory-{args.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
