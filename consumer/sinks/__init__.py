"""Sinks: where aggregates and per-partition positions are written, in one transaction.

Every sink implements :class:`Sink`. ``write`` is the heart of exactness (docs/design.md, "The
flush protocol", step 2): it merges the partials into the aggregates table and compare-and-sets the position rows in one
transaction, or changes nothing and raises :class:`~consumer.errors.PositionConflict`.

A sink that also implements :class:`ReplayableSink` supports ``eventfleet replay`` (docs/replay.md):
its ``write`` records checkpoints, its ``read_positions`` returns the replay filter
stored with each position, and its ``replay_*`` methods reset, clone and swap tables.

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

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
    replay: "ReplayFilter | None" = None  # an unfinished replay of this partition (replayable sinks)


@dataclass(frozen=True)
class ReplayFilter:
    """What a replay from window ``floor`` must not aggregate again in one partition.

    Offsets below ``until`` were read before the replay, and windows starting before ``floor``
    were kept, so they already hold those events: an event below ``until`` whose window starts
    before ``floor`` still moves the watermark and the late count, but is not aggregated (and an
    undecodable message below ``until`` is counted, its reject row and dead letter exist). From
    ``until`` on, the partition is processed normally. Stored with the position, so any worker
    that takes the partition over continues the replay exactly.
    """

    floor: int
    until: int


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
    """A new position and the one this worker last read or wrote (None: no row expected), with the
    states the partition passed through since the last flush (for replay checkpoints: each is the
    exact position, watermark and counts after some offset below ``new``'s)."""

    new: Position
    expected_offset: int | None
    passed: list[Position] = field(default_factory=list)


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


@dataclass
class ReplayReset:
    """One replay's reset of a group, applied by :meth:`ReplayableSink.replay_reset` atomically."""

    windows_from: int  # aggregate rows of windows starting here or later are deleted
    positions: list[Position]  # every partition's new position, with its filter (``replay``) if any
    forget_checkpoints: bool = False  # a rebuild from the earliest offsets: old checkpoints may not hold


@runtime_checkable
class ReplayableSink(Sink, Protocol):
    """A sink that ``eventfleet replay`` can rewind (docs/replay.md).

    On top of :class:`Sink`:

    - ``write`` also keeps **checkpoints** per (group, topic, partition, window of the watermark):
      of the positions it writes and the states they passed (``PositionWrite.passed``), the one
      with the highest offset in each window of the watermark, in the same transaction;
    - ``read_positions`` sets ``Position.replay`` to the stored filter while the position is below
      its ``until``;
    - the ``replay_*`` methods below.
    """

    def replay_checkpoints(
        self, group: str, watermark_below: int, offset_at_most: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Position]:
        """Per partition of ``offset_at_most``, the checkpoint with the highest offset whose watermark
        is below ``watermark_below`` and whose offset is at most the given one (absent: none)."""
        ...

    def replay_reset(self, group: str, reset: ReplayReset) -> int:
        """In one transaction: delete the aggregate rows of windows from ``reset.windows_from``, set
        every position (unconditionally: no worker may run) and its filter, drop the group's other
        filters (and its checkpoints if asked). Returns the rows deleted."""
        ...

    def replay_windows(self, windows_from: int) -> tuple[int, int]:
        """How many windows starting at or after ``windows_from``, and how many rows, the table holds."""
        ...

    def replay_tables(self) -> list[str]:
        """The names of the tables this sink keeps for its table (aggregates first)."""
        ...

    def replay_table_exists(self, table: str) -> bool:
        """Whether the aggregates table ``table`` exists next to this one (creates nothing)."""
        ...

    def replay_clone(self, table: str, group: str, to_group: str, windows_below: int) -> None:
        """In one transaction (a consistent snapshot): copy this table's rows of windows starting
        before ``windows_below``, and ``group``'s positions, filters, checkpoints and every reject,
        into the (empty) tables of ``table`` under ``to_group``."""
        ...

    def replay_swap(self, table: str, group: str, other_group: str) -> None:
        """In one transaction: exchange this table (and its positions, rejects, checkpoints, filters)
        with ``table``, and their groups: ``table``'s ``other_group`` rows become ``group``'s under
        this table's name, and this table's ``group`` rows become ``other_group``'s under ``table``."""
        ...


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


def open_sink(pipeline: Pipeline) -> Sink:
    """Open (and create if needed) the pipeline's sink."""
    if pipeline.sink.type == "sqlite":
        from .sqlite import SqliteSink

        return SqliteSink(pipeline)
    if pipeline.sink.type == "postgres":
        from .postgres import PostgresSink

        return PostgresSink(pipeline)
    if pipeline.sink.type == "kafka":
        from .kafka import KafkaSink

        return KafkaSink(pipeline)
    raise ConfigError("sink.type", f"unknown sink {pipeline.sink.type!r}", "use sqlite, postgres or kafka")


def check_sink(pipeline: Pipeline) -> list[str]:
    """For ``check-config``: whether the sink can be reached and written, without writing; lines
    that say what was checked and what a worker will find, or an EventfleetError (a SinkError for
    an unreachable sink) that says what is wrong and the fix."""
    if pipeline.sink.type == "sqlite":
        from .sqlite import check

        return [check(pipeline)]
    if pipeline.sink.type == "postgres":
        from .postgres import check as check_postgres

        return [check_postgres(pipeline)]
    if pipeline.sink.type == "kafka":
        from .kafka import check as check_kafka

        return check_kafka(pipeline)
    raise ConfigError("sink.type", f"unknown sink {pipeline.sink.type!r}", "use sqlite, postgres or kafka")


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
