"""How the PostgreSQL sink should merge a flush: the write strategies side by side.

    python bench/pg_write.py [--rows 1000,10000,100000] [--repeat 5] [--dsn DSN]

For each strategy of consumer/sinks/postgres.py (``unnest``: one INSERT ... SELECT FROM
unnest(arrays) ... ON CONFLICT; ``copy``: binary COPY into a temporary table, then one
INSERT ... SELECT ... ON CONFLICT; ``executemany``: one INSERT ... ON CONFLICT per row, pipelined
by psycopg) it times whole ``PostgresSink.write`` calls, the way a worker flushes: the position
compare-and-set, the merge and the COMMIT. Two cases per size: every key new (inserts), and
every key already stored (the ON CONFLICT merge). Median of --repeat runs. Without --dsn it
starts a throwaway local PostgreSQL (fsync on, as in production) and removes it afterwards.
Writes bench/results/pg-write-<time>.json.
"""

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer import config  # noqa: E402
from consumer.dev import postgres as devpostgres  # noqa: E402
from consumer.sinks.postgres import STRATEGIES, PostgresSink  # noqa: E402
from consumer.sinks.sql import TABLE_SUFFIXES  # noqa: E402
from consumer.types import Position, PositionWrite  # noqa: E402

KEYS_PER_WINDOW = 300  # 100 campaigns x 3 event types


def pipeline(work: Path, dsn: str, table: str) -> config.Pipeline:
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["bench"], "group_id": "bench"},
        "schema": {"path": str(ROOT / "schemas" / "ad_event.avsc")},
        "window": {"size": "1m", "time_field": "ts"},
        "aggregate": {
            "group_by": ["campaign_id", "event_type"],
            "metrics": {
                "events": "count",
                "spend": "sum:price_micros",
                "min_price": "min:price_micros",
                "max_price": "max:price_micros",
            },
        },
        "sink": {"type": "postgres", "dsn": dsn, "table": table},
    }
    path = work / f"{table}.toml"
    path.write_text(tomli_w.dumps(doc))
    return config.load(path)


def partials(rows: int, first_window: int, rng: random.Random) -> dict[tuple[Any, ...], list[int]]:
    types = ("impression", "click", "conversion")
    out = {}
    for i in range(rows):
        ws = (first_window + i // KEYS_PER_WINDOW) * 60_000
        key = (ws, f"c{i % KEYS_PER_WINDOW // 3}", types[i % 3])
        price = rng.randrange(5_000_000)
        out[key] = [rng.randrange(1, 500), price * 40, price // 2, price]
    return out


def measure(dsn: str, work: Path, strategy: str, rows: int, repeat: int) -> dict[str, float]:
    table = f"bench_{strategy}_{rows}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        for suffix in TABLE_SUFFIXES:
            admin.execute(f'DROP TABLE IF EXISTS "{table}{suffix}"')
    sink = PostgresSink(pipeline(work, dsn, table), strategy)
    rng = random.Random(1)
    offset: int | None = None
    window = 0
    inserts, updates = [], []
    try:
        for _ in range(repeat):
            new = partials(rows, window, rng)
            window += rows // KEYS_PER_WINDOW + 1
            for batch, times in ((new, inserts), ({k: v[:] for k, v in new.items()}, updates)):
                position = PositionWrite(Position("bench", 0, (offset or 0) + rows, 0), offset)
                started = time.perf_counter()
                sink.write("bench", batch, [position], [])
                times.append(time.perf_counter() - started)
                offset = position.new.next_offset
    finally:
        sink.close()
    ins, upd = statistics.median(inserts), statistics.median(updates)
    return {"insert_ms": ins * 1000, "update_ms": upd * 1000, "insert_rows_per_s": rows / ins,
            "update_rows_per_s": rows / upd}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000,10000,100000", help="rows per flush, comma-separated")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--dsn", help="an existing server (default: start a throwaway one)")
    args = ap.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        server = devpostgres.Server.temporary(fsync=True)
        server.up()
        dsn = server.dsn
    work = Path(tempfile.mkdtemp(prefix="eventfleet-pgwrite-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        with psycopg.connect(dsn) as c:
            version = c.info.server_version
        print(f"{'strategy':12s} {'rows':>8s} {'insert ms':>10s} {'rows/s':>10s} {'merge ms':>10s} {'rows/s':>10s}")
        for rows in (int(r) for r in args.rows.split(",")):
            for strategy in args.strategies.split(","):
                r = measure(dsn, work, strategy, rows, args.repeat)
                results.setdefault(strategy, {})[str(rows)] = r
                print(
                    f"{strategy:12s} {rows:>8,d} {r['insert_ms']:>10.1f} {r['insert_rows_per_s']:>10,.0f} "
                    f"{r['update_ms']:>10.1f} {r['update_rows_per_s']:>10,.0f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.remove()
    out = ROOT / "bench" / "results" / f"pg-write-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "server_version": version,
                "repeat": args.repeat,
                "psycopg": psycopg.__version__,
                "libpq": psycopg.pq.version(),
                "results": results,
            },
            indent=1,
        )
    )
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
