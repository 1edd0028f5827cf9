"""``eventfleet replay``: recompute windows from a time, the earliest offsets or given offsets,
exactly (docs/replay.md). The terminal side: it shows the plan (consumer/replay_plan.py), asks,
and shows the progress and the outcome of the steps consumer/replay.py carries out.
"""

import argparse
import logging
import sys
from typing import TYPE_CHECKING, TextIO

from .. import config
from ..errors import ConfigError
from ..progress import Progress
from ..replay_plan import Mode, Plan, ReplayRefused, parse_offsets, parse_timestamp, refuse_members
from ..sinks import ReplayableSink, open_sink, replayable
from ..window import NO_WATERMARK, iso

if TYPE_CHECKING:  # consumer.groups declares the metrics (tests/test_imports.py)
    from ..groups import Kafka


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline .toml file")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-timestamp",
        metavar="TIME",
        help="recompute every window starting at or after TIME "
        "(ISO 8601 such as 2026-11-20T10:00:00Z, or epoch ms); earlier windows stay as they are",
    )
    start.add_argument("--from-earliest", action="store_true", help="recompute everything (the table is rebuilt)")
    start.add_argument(
        "--from-offsets",
        metavar="P:O,...",
        help="recompute from the earliest window of the events "
        "at these offsets (PARTITION:OFFSET or TOPIC:PARTITION:OFFSET, comma-separated)",
    )
    p.add_argument(
        "--into",
        metavar="TABLE",
        help="replay into a separate table with its own consumer group "
        "(a shadow backfill), leaving the live table and group untouched",
    )
    p.add_argument(
        "--swap",
        action="store_true",
        help="promote the --into table to the live table (alone, or after the replay); needs the live fleet stopped",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan per partition and stop")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


def main(args: argparse.Namespace) -> int:
    pipeline = config.load(args.config)
    mode = None
    if args.from_timestamp is not None:
        mode = Mode("timestamp", timestamp_ms=parse_timestamp(args.from_timestamp))
    elif args.from_earliest:
        mode = Mode("earliest")
    elif args.from_offsets is not None:
        mode = Mode("offsets", offsets=parse_offsets(args.from_offsets))
    return replay(pipeline, mode, args.into, args.swap, args.dry_run, args.yes, args.verbose)


def replay(
    pipeline: config.Pipeline,
    mode: Mode | None,
    into: str | None = None,
    swap: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``eventfleet replay``; returns the exit code."""
    # The replay worker declares the metrics: imported only when a replay runs, never on
    # building the parser (tests/test_imports.py).
    from ..groups import Kafka
    from ..replay import check_shadow_name

    live = replayable(open_sink(pipeline), pipeline.sink.type)
    kafka = Kafka(pipeline)
    try:
        shadow = None
        if into is not None:
            shadow = check_shadow_name(pipeline, live, into)
        if swap and shadow is None:
            raise ConfigError("--swap", "promotes a shadow table", "give --into TABLE too")
        if mode is None:
            if shadow is None or not swap:
                raise ConfigError("replay", "nothing to do", "give --from-timestamp, --from-earliest or --from-offsets")
            return _swap(pipeline, shadow, live, kafka, dry_run, yes, out)
        if swap and not dry_run and (members := kafka.members(pipeline.kafka.group_id)):
            raise refuse_members(pipeline.kafka.group_id, members,
                                 "--swap promotes the shadow table once the replay is done, so the live fleet "
                                 "must be stopped; or replay --into without --swap now and swap later.")  # fmt: skip
        code = _replay(pipeline, shadow, live, kafka, mode, dry_run, yes, verbose, out)
        if code == 0 and swap and shadow is not None and not dry_run:
            return _swap(pipeline, shadow, live, kafka, False, True, out)
        return code
    finally:
        kafka.close()
        live.close()


def _replay(
    pipeline: config.Pipeline,
    shadow: config.Pipeline | None,
    live: ReplayableSink,
    kafka: "Kafka",
    mode: Mode,
    dry_run: bool,
    yes: bool,
    verbose: bool,
    out: TextIO,
) -> int:
    from ..replay import prepare

    r = prepare(pipeline, shadow, live, kafka, mode)
    try:
        target, group = r.target, r.group
        if r.clone:
            header = (
                f"replay into the new table {target.sink.table} (group {group}): a snapshot of {pipeline.sink.table} "
                f"(its rows of the windows kept, its positions, checkpoints and rejects) is copied, then replayed "
                f"there; {pipeline.sink.table} and group {pipeline.kafka.group_id} are left untouched"
            )
        else:
            header = f"replay of group {group} into table {target.sink.table} ({_where(target)})"
        print_plan(r.plan, out, header)
        if dry_run:
            if r.members:
                out.write(f"\nnote: {refuse_members(group, r.members, 'A replay now would be refused.')}\n")
            return 0
        if r.members:
            raise refuse_members(group, r.members, "Replaying under a running fleet would race its workers.")
        windows, rows = r.plan.windows
        if not confirm(f"recompute {windows:,} windows ({rows:,} rows), reprocessing {r.plan.total:,} messages?", yes):
            out.write("nothing done\n")
            return 1
        r.start()
        events, done, seconds, active = _run(target, r.plan, verbose)
        windows, rows = r.recomputed()
    finally:
        r.close()
    if not done:
        out.write(
            f"replay interrupted after {events:,} events: rerun the same command to redo it, or start the fleet, "
            "which continues it exactly (the replay's filters are stored with the positions)\n"
        )
        return 1
    floor = r.plan.floor
    since = "" if floor == NO_WATERMARK else f" from {iso(floor)}"
    out.write(
        f"replayed {events:,} events in {seconds:.1f} s ({events / max(active, 1e-3):,.0f} events/s from the first "
        f"to the last), recomputed {windows:,} windows ({rows:,} rows){since} in table {target.sink.table}\n"
    )
    return 0


def _run(target: config.Pipeline, plan: Plan, verbose: bool) -> tuple[int, bool, float, float]:
    """The replay worker under a progress bar (and without its flush lines, which would bury it)."""
    from ..replay import run_worker

    quiet = logging.getLogger("consumer")
    level = quiet.level
    if not verbose:
        quiet.setLevel(logging.WARNING)
    try:
        with Progress(plan.total, "replay") as bar:

            def progress(n: int) -> None:
                if bar.n == 0:
                    bar.restart()  # events/s and the ETA count from the first event, not the group join
                bar.update(n)

            return run_worker(target, plan, progress)
    finally:
        quiet.setLevel(level)


def _swap(
    pipeline: config.Pipeline,
    shadow: config.Pipeline,
    live: ReplayableSink,
    kafka: "Kafka",
    dry_run: bool,
    yes: bool,
    out: TextIO,
) -> int:
    from ..replay import check_swap, swap

    s = check_swap(pipeline, shadow, live, kafka)
    group, other, table = pipeline.kafka.group_id, shadow.kafka.group_id, shadow.sink.table
    head = ("topic", "partition", f"{pipeline.sink.table} (live)", f"{table} (shadow)", "end", "left to process")
    cells: list[tuple[str, ...]] = [head]
    for tp in s.partitions:
        mine, new = s.ours.get(tp), s.theirs.get(tp)
        end = s.ends[tp][1]
        left = max(0, end - new.next_offset) if new else 0
        cells.append((tp[0], str(tp[1]), f"{mine.next_offset:,}" if mine else "-",
                      f"{new.next_offset:,}" if new else "-", f"{end:,}", f"{left:,}"))  # fmt: skip
    out.write(
        f"swap: table {table} (group {other}) becomes {pipeline.sink.table} (group {group}), and the current "
        f"{pipeline.sink.table} becomes {table}; the live fleet then continues from the shadow's positions\n"
    )
    _table(cells, out)
    for g, members in s.members.items():
        if members:
            if dry_run:
                out.write(f"\nnote: {refuse_members(g, members, 'A swap now would be refused.')}\n")
            else:
                raise refuse_members(g, members, "A swap needs both the live fleet and the shadow replay stopped.")
    if dry_run:
        return 0
    if not confirm(f"swap {pipeline.sink.table} and {table}?", yes):
        out.write("nothing done\n")
        return 1
    swap(s, live, kafka)
    out.write(
        f"swapped: {pipeline.sink.table} now holds the replayed results (group {group} continues from their "
        f"positions); the previous results are in {table}\n"
    )
    return 0


# -- showing and asking -----------------------------------------------------------------------------


def print_plan(plan: Plan, out: TextIO, header: str) -> None:
    out.write(header + "\n")
    out.write(f"  {plan.why}\n")
    windows, rows = plan.windows
    out.write(f"  {windows:,} windows ({rows:,} rows) of table {plan.table} are recomputed\n\n")
    head = ("topic", "partition", "current", "new", "end", "to reprocess", "restarts from", "old windows kept below")
    cells: list[tuple[str, ...]] = [head]
    for p in plan.partitions:
        kept = f"offset {p.new.replay.until:,}" if p.new.replay and plan.floor != NO_WATERMARK else "-"
        current = f"{p.current.next_offset:,}" if p.current else "-"
        cells.append((p.tp[0], str(p.tp[1]), current, f"{p.new.next_offset:,}", f"{p.end:,}",
                      f"{p.to_reprocess:,}", p.origin, kept))  # fmt: skip
    cells.append(("total", "", "", "", "", f"{plan.total:,}", "", ""))
    _table(cells, out)


def _table(cells: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        line = "  ".join(
            v.ljust(w) if i in (0, 6, 7) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        out.write("  " + line.rstrip() + "\n")


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ReplayRefused("not asking for confirmation on a non-interactive input: pass --yes to go ahead, "
                            "or --dry-run to only print the plan")  # fmt: skip
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _where(pipeline: config.Pipeline) -> str:
    """The sink's database, for the plan's header (a DSN is shown without its password)."""
    if pipeline.sink.type == "postgres":
        from ..sinks.postgres import describe_target

        return f"postgres at {describe_target(pipeline.sink.dsn or '')}"
    return f"{pipeline.sink.type} {pipeline.sink.path}"
