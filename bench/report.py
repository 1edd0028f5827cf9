"""The benchmark's Markdown tables, generated from bench/results/*.json (never copied by hand).

    python bench/report.py [FILE.json ...]              print the tables
    python bench/report.py --write docs/performance.md  rewrite its generated blocks in place

Without files it reads the newest result of each kind in bench/results/: the contenders
(``<time>.json``, bench/run.py), memory by keys and the memory soak (``memory-keys-*``,
``memory-soak-*``, bench/memory.py), the PostgreSQL write strategies (``pg-write-*``,
bench/pg_write.py) and the tailers (``tail-*``, bench/tail.py). Each kind renders one block; in a
Markdown file a block is the text between ``<!-- bench:KIND -->`` and ``<!-- /bench:KIND -->``
(KIND: main, memory-keys, memory-soak, pg-write, tail). Without files, --write rewrites the blocks
the document has. Medians are computed here from every run in the file, as bench/run.py does.
"""

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KINDS = ("main", "memory-keys", "memory-soak", "pg-write", "tail")
# the pairs bench/run.py reports, plus Quix by CPU: (a, b) reads "a is N times b"
RATIOS = (
    ("eventfleet-1", "naive"),
    ("eventfleet-1", "quix"),
    ("eventfleet-2", "eventfleet-1"),
    ("eventfleet-1", "raw"),
    ("eventfleet-1-postgres", "eventfleet-1"),
    ("eventfleet-1-kafka", "eventfleet-1"),
    ("eventfleet-1-registry", "eventfleet-1"),
    ("eventfleet-1-registry", "naive-registry"),
    ("eventfleet-1-registry", "quix-registry"),
    ("eventfleet-1-sketches", "eventfleet-1"),
    ("eventfleet-1-sketches", "quix-sketches"),
)
# the schema registry's targets (#13): (a, b, measure, at least), where a / b by "events/s" is the
# ratio of the events/s and by "CPU per event" that of the CPU-s per million events, b's over a's
TARGETS = (
    ("eventfleet-1-registry", "eventfleet-1", "CPU per event", 0.95),
    ("eventfleet-1-registry", "naive-registry", "events/s", 1.5),
    ("eventfleet-1-registry", "quix-registry", "events/s", 8.0),
    # the sketch metrics' targets (#17): a distinct and a quantiles metric added to the example
    ("eventfleet-1-sketches", "eventfleet-1", "events/s", 0.6),
    ("eventfleet-1-sketches", "quix-sketches", "events/s", 8.0),
)
STRATEGIES = ("copy", "unnest", "executemany")
NUMBERS = {2: "two", 3: "three", 4: "four"}


def kind_of(doc: dict[str, Any]) -> str:
    if doc.get("benchmark") == "tail":
        return "tail"
    if "runs" in doc and "machine" in doc:
        return "main"
    if doc.get("mode") == "keys":
        return "memory-keys"
    if doc.get("mode") == "soak":
        return "memory-soak"
    if "server_version" in doc:
        return "pg-write"
    raise ValueError("not a result of bench/run.py, bench/memory.py, bench/pg_write.py or bench/tail.py")


def newest(results: Path = RESULTS) -> dict[str, Path]:
    """The newest file of each kind (the names end in a sortable time)."""
    patterns = {"main": "[0-9]*.json", "memory-keys": "memory-keys-*.json",
                "memory-soak": "memory-soak-*.json", "pg-write": "pg-write-*.json", "tail": "tail-*.json"}  # fmt: skip
    out = {}
    for kind, pattern in patterns.items():
        files = sorted(results.glob(pattern))
        if files:
            out[kind] = files[-1]
    return out


def link(path: Path, base: Path) -> str:
    """A Markdown link to a results file, relative to the document it goes into."""
    try:
        shown = path.resolve().relative_to(ROOT)
    except ValueError:
        shown = Path(path.name)
    target = Path(os.path.relpath(path.resolve(), base.resolve()))
    return f"[`{shown}`]({target.as_posix()})"


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in ("events_per_s", "cpu_s_per_m", "rss_mb")}


def main_block(doc: dict[str, Any], source: str) -> str:
    m = doc["machine"]
    med = {name: medians(rs) for name, rs in doc["runs"].items() if rs}
    lines = [
        f"Measured on {m['cpus']} cores ({m['cpu_model']}), {round(m['memory_gib'])} GiB, Python {m['python']}, "
        f"Kafka {m['kafka']} on the same machine, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), fastavro {m['fastavro']}; {doc['events']:,} events over {doc['partitions']} "
        f"partitions, median of `--repeat {doc['repeat']}` ({source}):",
        "",
    ]
    framing = doc.get("framing")
    if framing:
        lines += [
            f"The `-registry` contenders read the same events framed for a schema registry (Confluent wire "
            f"format), written by {_versions(framing['writer_versions'])}; {framing['registry']} on the same "
            "machine serves the writer schemas.",
            "",
        ]
    lines += [
        "| contender | events/s | CPU-s per million events | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for name, r in med.items():
        shown = f"**{name}**" if re.fullmatch(r"eventfleet-\d+", name) else name
        lines.append(f"| {shown} | {r['events_per_s']:,.0f} | {r['cpu_s_per_m']:.2f} | {r['rss_mb']:,.0f} MB |")
    lines += [
        "",
        "| ratio | events/s (medians) | CPU per event (medians, b / a) | events/s in each round |",
        "|---|---:|---:|---|",
    ]
    for a, b in RATIOS:
        if a not in med or b not in med:
            continue
        rounds = [
            ra["events_per_s"] / rb["events_per_s"] for ra, rb in zip(doc["runs"][a], doc["runs"][b], strict=False)
        ]
        lines.append(
            f"| {a} / {b} | {med[a]['events_per_s'] / med[b]['events_per_s']:.2f}x "
            f"| {med[b]['cpu_s_per_m'] / med[a]['cpu_s_per_m']:.2f}x "
            f"| {', '.join(f'{x:.2f}' for x in rounds)} |"
        )
    targets = [t for t in TARGETS if t[0] in med and t[1] in med]
    if targets:
        lines += [
            "",
            "| target | by | at least | medians | in each round | |",
            "|---|---|---:|---:|---|---|",
        ]
    for a, b, by, least in targets:
        got = _ratio(med[a], med[b], by)
        rounds = [_ratio(ra, rb, by) for ra, rb in zip(doc["runs"][a], doc["runs"][b], strict=False)]
        lines.append(
            f"| {a} / {b} | {by} | {least:.2f}x | {got:.2f}x | {', '.join(f'{x:.2f}' for x in rounds)} "
            f"| {'met' if got >= least else '**missed**'} |"
        )
    sizes = [r["sink_bytes_per_row"] for r in doc["runs"].get("eventfleet-1-sketches", []) if "sink_bytes_per_row" in r]
    if sizes:
        mid = {k: statistics.median(z[k] for z in sizes) for k in ("users_sketch", "price_sketch", "file")}
        lines += [
            "",
            f"eventfleet-1-sketches' SQLite sink, bytes per row (medians): `users_sketch` {mid['users_sketch']:,.0f}, "
            f"`price_sketch` {mid['price_sketch']:,.0f}, the whole file (tables, indexes, WAL) {mid['file']:,.0f}.",
        ]
    return "\n".join(lines)


def _versions(n: int) -> str:
    return "one writer version" if n == 1 else f"{NUMBERS.get(n, n)} interleaved writer versions"


def _ratio(a: dict[str, float], b: dict[str, float], by: str) -> float:
    """a / b: by events/s, or by CPU per event (b's CPU-s per million over a's)."""
    if by == "events/s":
        return a["events_per_s"] / b["events_per_s"]
    return b["cpu_s_per_m"] / a["cpu_s_per_m"]


def memory_keys_block(doc: dict[str, Any], source: str) -> str:
    events = sorted({r["events"] for r in doc["results"]})
    lines = [
        f"One worker, {' / '.join(f'{e:,}' for e in events)} events in one-minute windows that each hold every "
        f"key ({source}):",
        "",
        "| distinct keys per window | windows | peak RSS | rows |",
        "|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        windows = r["rows"] // r["keys_per_window"]
        lines.append(f"| {r['keys_per_window']:,} | {windows} | {r['peak_rss_mb']:,.0f} MB | {r['rows']:,} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def memory_soak_block(doc: dict[str, Any], source: str) -> str:
    samples = doc["samples"]
    first, last = samples[0], samples[-1]
    middle = min(samples, key=lambda s: abs(s[0] - last[0] / 2))
    warmup = samples[len(samples) // 10][0]  # bench/memory.py: the first tenth of the samples is warm-up
    lines = [
        f"`bench/memory.py soak --minutes {doc['minutes']:g} --rate {doc['rate']:g}`: {doc['events']:,} events "
        f"produced at a steady {doc['rate']:,.0f} events/s with event time = wall time, one worker, RSS sampled "
        f"every {samples[1][0] - samples[0][0] if len(samples) > 1 else first[0]} s ({source}):",
        "",
        "| after | RSS |",
        "|---|---:|",
    ]
    for t, rss in (first, middle, last):
        lines.append(f"| {_duration(t)} | {rss:.1f} MB |")
    lines.append(
        f"| {_duration(warmup)} to the end: lowest, highest | "
        f"{doc['rss_after_warmup_min_mb']:.1f}, {doc['rss_after_warmup_max_mb']:.1f} MB |"
    )
    return "\n".join(lines)


def pg_write_block(doc: dict[str, Any], source: str) -> str:
    res = doc["results"]
    strategies = [s for s in STRATEGIES if s in res] + [s for s in res if s not in STRATEGIES]
    sizes = sorted({int(n) for s in strategies for n in res[s]})
    header = " | ".join(f"{s}: new | {s}: merge" for s in strategies)
    lines = [
        f"Whole sink transactions, ms, median of {doc['repeat']} (PostgreSQL {doc['server_version'] // 10000}, "
        f"psycopg {doc['psycopg']}; new: every key inserted, merge: every key already stored; {source}):",
        "",
        f"| rows | {header} |",
        "|---:|" + "---:|" * (2 * len(strategies)),
    ]
    for n in sizes:
        cells = []
        for s in strategies:
            r = res[s].get(str(n))
            cells += [f"{r['insert_ms']:,.0f}", f"{r['update_ms']:,.0f}"] if r else ["", ""]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TAIL_NAMES = {"eventfleet": "**eventfleet tail**", "naive": "naive loop", "rsyslog": "rsyslog imfile + omkafka"}


def tail_block(doc: dict[str, Any], source: str) -> str:
    m = doc["machine"]
    runs = doc["contenders"]
    keys = ("lines_per_s", "cpu_s_per_m", "rss_mb", "lost", "duplicated")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items() if rs}
    lines = [
        f"Measured on {m['cpus']} cores ({m['cpu_model']}), {round(m['memory_gib'])} GiB, Python {m['python']}, "
        f"Kafka {m['kafka']} on the same machine, confluent-kafka {m['confluent_kafka']} (librdkafka "
        f"{m['librdkafka']}), fastavro {m['fastavro']}, rsyslog {m.get('rsyslog') or '-'}; {doc['lines']:,} lines, "
        f"median of `--repeat {doc['repeat']}` ({source}):",
        "",
        "| contender | lines/s | CPU-s per million lines | peak RSS | lines lost | lines duplicated |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in med.items():
        lost = sum(x["lost"] for x in runs[name])
        dup = sum(x["duplicated"] for x in runs[name])
        lines.append(
            f"| {TAIL_NAMES.get(name, name)} | {r['lines_per_s']:,.0f} | {r['cpu_s_per_m']:.2f} | "
            f"{r['rss_mb']:,.0f} MB | {lost:,} | {dup:,} |"
        )
    lines += ["", "| ratio | lines/s (medians) | CPU per line (medians, b / a) |", "|---|---:|---:|"]
    for a, b in (("eventfleet", "naive"), ("eventfleet", "rsyslog")):
        if a in med and b in med:
            lines.append(
                f"| {a} / {b} | {med[a]['lines_per_s'] / med[b]['lines_per_s']:.2f}x "
                f"| {med[b]['cpu_s_per_m'] / med[a]['cpu_s_per_m']:.2f}x |"
            )
    return "\n".join(lines)


BLOCKS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "main": main_block,
    "memory-keys": memory_keys_block,
    "memory-soak": memory_soak_block,
    "pg-write": pg_write_block,
    "tail": tail_block,
}


def render(files: list[Path], base: Path) -> dict[str, str]:
    """KIND -> Markdown for each file (a later file of the same kind wins); links relative to base."""
    out = {}
    for f in files:
        doc = json.loads(f.read_text())
        kind = kind_of(doc)
        out[kind] = BLOCKS[kind](doc, link(f, base))
    return out


def rewrite(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """Replace each ``<!-- bench:KIND -->`` ... ``<!-- /bench:KIND -->`` block; returns the kinds replaced."""
    done = []
    for kind, body in blocks.items():
        pattern = re.compile(
            rf"(<!-- bench:{re.escape(kind)} -->\n)(?:.*?\n)?(<!-- /bench:{re.escape(kind)} -->)", re.S
        )

        def replace(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        text, n = pattern.subn(replace, text)
        if n:
            done.append(kind)
    return text, done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help="results JSON files (default: the newest of each kind)")
    ap.add_argument("--write", type=Path, metavar="DOC", help="rewrite the generated blocks of this Markdown file")
    args = ap.parse_args(argv)
    files = args.files or list(newest().values())
    if not files:
        print(f"report: no results in {RESULTS.relative_to(ROOT)}", file=sys.stderr)
        return 2
    try:
        blocks = render(files, (args.write.parent if args.write else Path.cwd()))
    except (OSError, ValueError, KeyError) as e:
        print(f"report: cannot read the results: {e!r}", file=sys.stderr)
        return 2
    if not args.write:
        for kind, body in blocks.items():
            print(f"<!-- bench:{kind} -->\n{body}\n<!-- /bench:{kind} -->\n")
        return 0
    text, done = rewrite(args.write.read_text(), blocks)
    # without files, the newest result of each kind: the document takes the kinds it has blocks for
    missing = sorted(set(blocks) - set(done)) if args.files or not done else []
    if missing:
        print(
            f"report: {args.write} has no block for {', '.join(missing)}: add <!-- bench:KIND --> markers",
            file=sys.stderr,
        )
        return 2
    args.write.write_text(text)
    print(f"{args.write}: rewrote {', '.join(done)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
