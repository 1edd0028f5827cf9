"""``eventfleet replay``: recompute windows from a time, the earliest offsets or given offsets,
exactly (docs/replay.md)."""

import argparse

from .. import config


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
    from ..replay import Mode, parse_offsets, parse_timestamp, replay  # declares the metrics (the worker)

    pipeline = config.load(args.config)
    mode = None
    if args.from_timestamp is not None:
        mode = Mode("timestamp", timestamp_ms=parse_timestamp(args.from_timestamp))
    elif args.from_earliest:
        mode = Mode("earliest")
    elif args.from_offsets is not None:
        mode = Mode("offsets", offsets=parse_offsets(args.from_offsets))
    return replay(pipeline, mode, args.into, args.swap, args.dry_run, args.yes, args.verbose)
