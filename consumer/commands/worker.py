"""``eventfleet worker``: one worker, unsupervised (or one of ``eventfleet run``'s, with the
hidden options the supervisor passes)."""

import argparse

from .. import config


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline .toml file, or env:NAME")
    p.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--group-instance-id", help=argparse.SUPPRESS)  # a supervisor slot's static membership
    p.add_argument("--metrics-port", type=int, default=0, help="serve this worker's /metrics (default: off)")


def main(args: argparse.Namespace) -> int:
    from ..worker import run  # declares the metrics: never on building the parser (tests/test_imports.py)

    pipeline = config.load(args.config)
    if args.metrics_port and args.heartbeat_fd is None:
        from prometheus_client import start_http_server

        from ..http import PortError

        try:  # before the worker joins the group
            start_http_server(args.metrics_port)
        except OSError as e:
            raise PortError(args.metrics_port, e, "Choose a free one with --metrics-port N (0 turns it off)") from None
    return run(pipeline, args.worker_id, args.heartbeat_fd, args.group_instance_id)
