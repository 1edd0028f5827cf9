"""``eventfleet results``: the aggregates in the sink."""

import argparse
import sys

from .. import config
from ..sinks import open_sink
from .rows import write_rows


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")


def main(args: argparse.Namespace) -> int:
    pipeline = config.load(args.config)
    sink = open_sink(pipeline)
    try:
        columns, rows = sink.results()
    finally:
        sink.close()
    write_rows(columns, rows, args.format, sys.stdout)
    return 0
