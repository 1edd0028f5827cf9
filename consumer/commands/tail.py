"""``eventfleet tail``: follow files into Kafka, each complete line exactly once (consumer/ingest)."""

import argparse

from .. import config
from ..errors import ConfigError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipeline .toml file with an [ingest] section, or env:NAME")
    p.add_argument(
        "--metrics-port", type=int, help="/metrics, /healthz, /readyz port (default [ingest] metrics_port; 0: off)"
    )


def main(args: argparse.Namespace) -> int:
    from ..ingest.tail import run  # declares the metrics: never on building the parser (tests/test_imports.py)

    pipeline = config.load(args.config)
    if pipeline.ingest is None:
        raise ConfigError("ingest", "section is missing", 'add [ingest] with paths = ["/var/log/app/*.log"]')
    return run(pipeline, args.metrics_port)
