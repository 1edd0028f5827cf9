"""Sinks: where aggregates and per-partition positions are written, in one transaction.

The interface and the abilities a sink declares are in :mod:`consumer.sinks.base`; what SQLite
and PostgreSQL share in :mod:`consumer.sinks.sql`. Each sink type is a module here, named in
:data:`SINK_TYPES`, that registers a :class:`~consumer.sinks.base.SinkType` as ``SINK``: its
``[sink]`` keys and their parser, how to open it, and its check for ``check-config``.
"""

import importlib

from ..config import Pipeline
from ..errors import ConfigError
from .base import ReplayableSink, Sink, SinkType

SINK_TYPES = ("sqlite", "postgres", "kafka")


def sink_type(name: str) -> SinkType:
    """The registration of a sink type: its module's ``SINK`` (imported on first use: psycopg and
    the Kafka producer load only for the pipelines that need them)."""
    if name not in SINK_TYPES:
        raise ConfigError("sink.type", f"unknown sink {name!r}", "use sqlite, postgres or kafka")
    registered = importlib.import_module(f"{__name__}.{name}").SINK
    assert isinstance(registered, SinkType)
    return registered


def open_sink(pipeline: Pipeline) -> Sink:
    """Open (and create if needed) the pipeline's sink."""
    return sink_type(pipeline.sink.type).open(pipeline)


def check_sink(pipeline: Pipeline) -> list[str]:
    """For ``check-config``: whether the sink can be reached and written, without writing; lines
    that say what was checked and what a worker will find, or an EventfleetError (a SinkError for
    an unreachable sink) that says what is wrong and the fix."""
    return sink_type(pipeline.sink.type).check(pipeline)


def replayable(sink: Sink, sink_type: str) -> ReplayableSink:
    """The sink as a :class:`ReplayableSink`, or a clear error for a sink that cannot replay."""
    if not isinstance(sink, ReplayableSink):
        if sink_type == "kafka":
            raise ConfigError(
                "sink.type",
                "the kafka sink cannot replay: its deltas are already in the output topic and downstream "
                "consumers have read them, so they cannot be taken back",
                "recompute into a new output topic: set [sink] topic and [kafka] group_id to new names and run the "
                "fleet (it reads the source topic from the earliest offset), then move consumers to that topic",
            )
        raise ConfigError(
            "sink.type",
            f"the {sink_type} sink does not support replay (it keeps no checkpoints to rewind to)",
            "replay with a sink that does (sqlite, postgres), or recompute by pointing a fresh [sink] table and "
            "[kafka] group_id at the topic",
        )
    return sink


__all__ = [
    "SINK_TYPES",
    "ReplayableSink",
    "Sink",
    "SinkType",
    "check_sink",
    "open_sink",
    "replayable",
    "sink_type",
]
