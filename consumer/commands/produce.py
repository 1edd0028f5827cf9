"""``eventfleet produce``: synthetic events valid for the pipeline's schema (consumer/produce.py)."""

import argparse
from pathlib import Path

from .. import config
from ..decode import load_schema
from ..errors import ConfigError
from ..produce import produce
from ..window import iso


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--count", type=int, required=True, help="events to produce")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (default: as fast as possible)")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    p.add_argument("--start", type=int, help="event time of the first event, epoch ms (default: now)")
    p.add_argument("--events-per-second", type=float, help="event-time density (default: --rate, else 2000)")
    p.add_argument("--create-topic", action="store_true", help="create the pipeline's topic first if it is missing")
    p.add_argument(
        "--partitions", type=int, help="partitions of a topic --create-topic creates (default: the broker's default)"
    )
    p.add_argument("--schema", type=Path, help="write with this version of the schema (.avsc; registry pipelines)")


def main(args: argparse.Namespace) -> int:
    from ..source import check_topics, create_topic  # declares the metrics: never on building the parser

    pipeline = config.load(args.config)
    topic = pipeline.kafka.topics[0]
    if args.create_topic and create_topic(pipeline, topic, args.partitions):
        print(f"created topic {topic}" + (f" with {args.partitions} partitions" if args.partitions else ""))
    check_topics(pipeline, topics=(topic,))  # not a delivery error per event: one line, with the fix
    schema = None
    if args.schema is not None:
        if pipeline.registry is None:
            raise ConfigError("--schema", "needs a pipeline with [schema] registry", "remove --schema")
        try:
            schema = load_schema(args.schema)
        except (OSError, ValueError) as e:
            raise ConfigError("--schema", f"{str(args.schema)!r} is not an Avro record schema ({e})",
                                     "point it at an .avsc file") from None  # fmt: skip
    s = produce(pipeline, args.count, args.rate, args.seed, args.start, args.events_per_second, schema=schema)
    print(
        f"produced {s.produced:,} events to {pipeline.kafka.topics[0]} in {s.seconds:.1f} s "
        f"({s.produced / max(s.seconds, 1e-9):,.0f} events/s); event times {iso(s.first_event_ms)} .. "
        f"{iso(s.last_event_ms)}"
    )
    return 0
