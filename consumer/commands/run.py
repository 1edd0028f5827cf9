"""``eventfleet run``: a supervised fleet of workers on this instance (consumer/fleet.py)."""

import argparse

from .. import config
from ..fleet import run


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline .toml file, or env:NAME to read it from variable NAME")
    p.add_argument("--workers", type=int, help="worker processes (default: the CPUs available to this process)")
    p.add_argument("--metrics-port", type=int, help="/metrics, /healthz, /readyz port (default [metrics] port; 0: off)")


def main(args: argparse.Namespace) -> int:
    extra = ["--log-format", args.log_format] + (["-v"] if args.verbose else [])  # the workers log alike
    return run(config.load(args.config), args.workers, args.metrics_port, extra)
