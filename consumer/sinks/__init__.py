"""Sinks: where aggregates and per-partition positions are written, in one transaction.

Every sink implements :class:`Sink`. ``write`` is the heart of exactness (DESIGN, flush step 2):
it merges the partials into the aggregates table and compare-and-sets the position rows in one
transaction, or changes nothing and raises :class:`~consumer.errors.PositionConflict`.
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
    if pipeline.sink.type == "postgres":
        from .postgres import PostgresSink

        return PostgresSink(pipeline)
    raise ConfigError("sink.type", f"unknown sink {pipeline.sink.type!r}", "use sqlite or postgres")


def check_sink(pipeline: Pipeline) -> str:
    """For ``check-config``: whether the sink can be reached and written, without writing; one
    line that says what was checked, or a SinkError that says what is wrong and the fix."""
    if pipeline.sink.type == "sqlite":
        from .sqlite import check

        return check(pipeline)
    if pipeline.sink.type == "postgres":
        from .postgres import check as check_postgres

        return check_postgres(pipeline)
    raise ConfigError("sink.type", f"unknown sink {pipeline.sink.type!r}", "use sqlite or postgres")
