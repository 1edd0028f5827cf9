"""The sink interface: what the worker and ``eventfleet replay`` may ask of a sink, and the
abilities a sink declares (read by the engine as typed class attributes, never probed).

``write`` is the heart of exactness (docs/design.md, "The flush protocol", step 2): it merges the
partials into the aggregates table and compare-and-sets the position rows in one transaction, or
changes nothing and raises :class:`~consumer.errors.PositionConflict`.

Abilities (class attributes, False unless a sink says otherwise):

- ``replay``: the sink is a :class:`ReplayableSink` (``eventfleet replay`` can rewind it).
- ``positions_in_kafka``: the positions are the group's committed Kafka offsets, committed
  inside the sink's own transaction; flush step 3 (the plain Kafka commit) is skipped, since it
  would overwrite them. Such a sink needs the worker's consumer: :meth:`Sink.use_consumer`.
- ``partials_by_partition``: the worker folds events under
  ``((window_start, topic, partition), *group_by)`` instead of ``(window_start, *group_by)``, so
  the sink can write each partition's partials apart.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..aggregate import State
from ..config import Pipeline, SinkSettings
from ..types import Position, PositionWrite, Reject, ReplayReset, TopicPartition


class Sink(ABC):
    replay: ClassVar[bool] = False
    positions_in_kafka: ClassVar[bool] = False
    partials_by_partition: ClassVar[bool] = False

    @abstractmethod
    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        """The stored positions of these partitions (absent: never written)."""

    @abstractmethod
    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        """Merge partials, store rejects and compare-and-set positions, in one transaction."""

    @abstractmethod
    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and every aggregate row, ordered by window then group-by values."""

    @abstractmethod
    def close(self) -> None: ...

    def use_consumer(self, consumer: Any) -> None:  # noqa: B027 (most sinks need nothing)
        """Called once the worker's consumer exists (a ``positions_in_kafka`` sink keeps it)."""


class ReplayableSink(Sink):
    """A sink that ``eventfleet replay`` can rewind (docs/replay.md).

    On top of :class:`Sink`:

    - ``write`` also keeps **checkpoints** per (group, topic, partition, window of the watermark):
      of the positions it writes and the states they passed (``PositionWrite.passed``), the one
      with the highest offset in each window of the watermark, in the same transaction;
    - ``read_positions`` sets ``Position.replay`` to the stored filter while the position is below
      its ``until``;
    - the ``replay_*`` methods below.
    """

    replay: ClassVar[bool] = True

    @abstractmethod
    def replay_checkpoints(
        self, group: str, watermark_below: int, offset_at_most: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Position]:
        """Per partition of ``offset_at_most``, the checkpoint with the highest offset whose watermark
        is below ``watermark_below`` and whose offset is at most the given one (absent: none)."""
        ...

    @abstractmethod
    def replay_reset(self, group: str, reset: ReplayReset) -> int:
        """In one transaction: delete the aggregate rows of windows from ``reset.windows_from``, set
        every position (unconditionally: no worker may run) and its filter, drop the group's other
        filters (and its checkpoints if asked). Returns the rows deleted."""
        ...

    @abstractmethod
    def replay_windows(self, windows_from: int) -> tuple[int, int]:
        """How many windows starting at or after ``windows_from``, and how many rows, the table holds."""
        ...

    @abstractmethod
    def replay_tables(self) -> list[str]:
        """The names of the tables this sink keeps for its table (aggregates first)."""
        ...

    @abstractmethod
    def replay_table_exists(self, table: str) -> bool:
        """Whether the aggregates table ``table`` exists next to this one (creates nothing)."""
        ...

    @abstractmethod
    def replay_clone(self, table: str, group: str, to_group: str, windows_below: int) -> None:
        """In one transaction (a consistent snapshot): copy this table's rows of windows starting
        before ``windows_below``, and ``group``'s positions, filters, checkpoints and every reject,
        into the (empty) tables of ``table`` under ``to_group``."""
        ...

    @abstractmethod
    def replay_swap(self, table: str, group: str, other_group: str) -> None:
        """In one transaction: exchange this table (and its positions, rejects, checkpoints, filters)
        with ``table``, and their groups: ``table``'s ``other_group`` rows become ``group``'s under
        this table's name, and this table's ``group`` rows become ``other_group``'s under ``table``."""
        ...


def _nothing_more(pipeline: Pipeline) -> None:
    """A sink that needs nothing from the other sections of the pipeline."""


@dataclass(frozen=True)
class SinkType:
    """What a sink module registers as ``SINK`` for its ``[sink] type`` (consumer/sinks/__init__.py)."""

    keys: tuple[str, ...]  # the [sink] keys it takes, "type" included
    parse: Callable[[Mapping[str, Any], Path], SinkSettings]  # [sink] -> settings, or a ConfigError
    open: Callable[[Pipeline], Sink]  # open (and create if needed) the sink
    check: Callable[[Pipeline], list[str]]  # check-config: reachable and writable, without writing
    check_pipeline: Callable[[Pipeline], None] = _nothing_more  # a ConfigError if another section does not fit
