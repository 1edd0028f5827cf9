"""The ``eventfleet`` command line: the parser, the logging set-up and the dispatch.

Each command lives in a module of this package named after it (``check-config`` in
``check_config.py``), with ``arguments(parser)`` adding its options and ``main(args)`` running it
and returning the exit code. Only the module of the command given is imported: ``eventfleet
worker`` loads the worker, not the demo, the replay's terminal or the development services
(``consumer.dev``). ``eventfleet --help`` imports them all.
"""

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence

from .. import __version__
from ..errors import EventfleetError, librdkafka_config_error

DESCRIPTION = (
    "The ``eventfleet`` command: run, tail, produce, results, replay, kafka, postgres, registry, demo, check-config."
)

# Every command and its one-line help, in the order of `eventfleet --help`; the help is here so
# that listing the commands imports none of them.
COMMANDS = {
    "run": "run a supervised fleet of workers on this instance (until SIGTERM)",
    "worker": "run one unsupervised worker (for process managers that supervise)",
    "tail": "follow files into Kafka, each complete line exactly once ([ingest])",
    "produce": "produce synthetic events valid for the pipeline's schema",
    "results": "print the aggregates from the sink",
    "replay": "recompute windows from a time, the earliest offsets or given offsets, exactly",
    "check-config": "validate a pipeline file, check that the sink can be written, print what it computes",
    "kafka": "a local Apache Kafka (KRaft) for development: one broker or three",
    "postgres": "a local PostgreSQL for development (127.0.0.1, trust auth)",
    "registry": "a local schema registry (Apicurio, Confluent-compatible API)",
    "demo": "local Kafka, generated events, workers, results, events/s",
}


def main(argv: Sequence[str] | None = None) -> int:
    """``eventfleet``: parse, set up the logs, run the command; user mistakes exit 2 in one line."""
    args = parse(sys.argv[1:] if argv is None else list(argv))
    _setup_logging(args.log_format, logging.DEBUG if args.verbose else logging.INFO, getattr(args, "worker_id", None))
    try:
        code: int = args.func(args)
        return code
    except EventfleetError as e:
        print(f"eventfleet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        config_error = librdkafka_config_error(e)
        if config_error is None:
            raise
        print(f"eventfleet: {config_error}", file=sys.stderr)
        return 2


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments, parsed by a parser that holds only the options of the command named."""
    return parser(_command(argv)).parse_args(argv)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``eventfleet`` parser: every command's options, or only ``command``'s (the other
    commands are listed, their modules not imported)."""
    p = argparse.ArgumentParser(prog="eventfleet", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"eventfleet {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text)
        if command is None or command == name:
            module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
            module.arguments(cmd)
            cmd.set_defaults(func=module.main)
    return p


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` names after the global options; None when unsure (then every
    command's options are built, and argparse says what is wrong)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-format":
            next(tokens, None)
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "worker": getattr(record, "worker", None),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(fmt: str, level: int, worker_id: int | None) -> None:
    """Text or JSON lines on stderr; every record names the worker (or "sup" for the supervisor)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = _JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d w%(worker)s] %(message)s")
    handler.setFormatter(formatter)
    worker = "-" if worker_id is None else str(worker_id)

    def tag(record: logging.LogRecord) -> bool:
        record.worker = worker
        return True

    handler.addFilter(tag)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for chatty in ("httpx", "httpcore", "botocore", "boto3", "urllib3"):  # a line per request: debug only
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
