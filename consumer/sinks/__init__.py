"""Sinks: where aggregates and per-partition positions are written, in one transaction.

Every sink implements :class:`Sink`. ``write`` is the heart of exactness (DESIGN, flush step 2):
it merges the partials into the aggregates table and compare-and-sets the position rows in one
transaction, or changes nothing and raises :class:`~consumer.errors.PositionConflict`.

Optional capabilities, read through the helpers at the end of this module (a sink without them
is a database sink that stores its positions in its own table):

- ``positions_in_kafka = True``: the positions are the group's committed Kafka offsets,
  committed inside the sink's own transaction; flush step 3 (the plain Kafka commit) is skipped,
  since it would overwrite them.
- ``partials_by_partition = True``: the worker folds events under
  ``((window_start, topic, partition), *group_by)`` instead of ``(window_start, *group_by)``, so
  the sink can write each partition's partials apart.
- ``use_consumer(consumer)``: called once the worker's consumer exists.
"""

from dataclasses import dataclass
from typing import Any, Protocol

from ..aggregate import State
from ..config import Pipeline
from ..errors import ConfigError

TopicPartition = tuple[str, int]


@dataclass
class Position:
    """What the sink stores per (group, topic, partition): where to resume, and the state that
    decides the fate of the next events (the watermark), with cumulative counts of the events
    that were not aggregated."""

    topic: str
    partition: int
    next_offset: int
    watermark: int
    late_events: int = 0
    invalid_events: int = 0


@dataclass
class Reject:
    """A message that could not be decoded: kept whole, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    error: str
    headers: list[tuple[str, bytes]] | None = None


@dataclass
class PositionWrite:
    """A new position and the one this worker last read or wrote (None: no row expected)."""

    new: Position
    expected_offset: int | None


class Sink(Protocol):
    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        """The stored positions of these partitions (absent: never written)."""
        ...

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        """Merge partials, store rejects and compare-and-set positions, in one transaction."""
        ...

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and every aggregate row, ordered by window then group-by values."""
        ...

    def close(self) -> None: ...


def open_sink(pipeline: Pipeline) -> Sink:
    """Open (and create if needed) the pipeline's sink."""
    if pipeline.sink.type == "sqlite":
        from .sqlite import SqliteSink

        return SqliteSink(pipeline)
    if pipeline.sink.type == "kafka":
        from .kafka import KafkaSink

        return KafkaSink(pipeline)
    raise ConfigError("sink.type", f"unknown sink {pipeline.sink.type!r}", "use sqlite or kafka")


def check_sink(pipeline: Pipeline) -> list[str]:
    """Connect to the pipeline's sink and say what a worker will find there (check-config);
    raises an EventfleetError with the fix when a worker could not use it."""
    if pipeline.sink.type == "kafka":
        from .kafka import check

        return check(pipeline)
    return []


def positions_in_kafka(sink: Sink) -> bool:
    """The sink's positions are the committed Kafka offsets (it commits them itself)."""
    return bool(getattr(sink, "positions_in_kafka", False))


def partials_by_partition(sink: Sink) -> bool:
    """The sink wants partials keyed by source partition (see the module docstring)."""
    return bool(getattr(sink, "partials_by_partition", False))


def use_consumer(sink: Sink, consumer: Any) -> None:
    """Hand the worker's consumer to a sink that needs it."""
    bind = getattr(sink, "use_consumer", None)
    if bind is not None:
        bind(consumer)
