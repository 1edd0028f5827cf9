"""What both benchmarks (bench/run.py, bench/tail.py) share: the machine they ran on, the
--only contenders they were asked for, the local broker they run against and the table of
medians they print."""

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer.dev import kafka as devkafka  # noqa: E402


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "kafka": devkafka.KAFKA_VERSION,
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "fastavro": fastavro.__version__,
    }


def chosen_contenders(ap: argparse.ArgumentParser, only: str, contenders: tuple[str, ...]) -> list[str]:
    """The comma-separated --only list, each a known contender (else the usage error)."""
    chosen = [c for c in only.split(",") if c]
    unknown = set(chosen) - set(contenders)
    if unknown:
        ap.error(f"unknown contenders {sorted(unknown)}; choose from {', '.join(contenders)}")
    return chosen


def local_broker(port: int) -> str:
    """The bootstrap address of the local broker on ``port``, started (and left running) if down."""
    bootstrap = f"127.0.0.1:{port}"
    if not devkafka.reachable(bootstrap, timeout_s=3):
        devkafka.Broker(ROOT / devkafka.default_home(port), port).up()
    return bootstrap


def print_medians(
    summary: dict[str, dict[str, float]],
    of: str,
    name_width: int,
    columns: list[tuple[str, str, int, str]],
    ratios: dict[str, float],
) -> None:
    """The medians of the runs (``of``: "2,000,000 events"), a row a contender and a column a
    (header, key, width, format) of ``columns``, then the ratios."""
    print(f"\nmedian of the runs, {of}:")
    print(" ".join([f"{'contender':{name_width}s}", *(f"{h:>{w}s}" for h, _, w, _ in columns)]))
    for name, r in summary.items():
        print(" ".join([f"{name:{name_width}s}", *(f"{r[k]:>{w}{fmt}}" for _, k, w, fmt in columns)]))
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
