"""Per-partition positions and the in-memory partials changed since the last flush.

Partials are merged across partitions (one dict for the whole worker): fewer rows to write,
and the rule of docs/design.md for that case ("Rebalances", on lost) is kept by
:meth:`WorkerState.clear` (drop all partials and rewind every owned partition to the sink's position).
"""

from dataclasses import dataclass, field

from .aggregate import State
from .types import Position, PositionWrite, Reject, TopicPartition
from .window import NO_WATERMARK


@dataclass(slots=True)
class PartitionState:
    """Where one owned partition stands in memory, and what the sink last held for it."""

    topic: str
    partition: int
    next_offset: int | None = None  # None: nothing read yet and no stored position
    watermark: int = NO_WATERMARK
    late_events: int = 0
    invalid_events: int = 0
    stored_offset: int | None = None  # the sink's next_offset as last read or written (CAS)
    committed_offset: int | None = None  # the offset last committed to Kafka by this worker
    stored_late: int = 0  # late_events as the sink last held it (the rest is since the last flush)
    replay_floor: int = 0  # an unfinished replay (ReplayFilter): below offset replay_until, events of
    replay_until: int = 0  # windows starting before replay_floor are already in the sink
    passed: dict[int, Position] = field(default_factory=dict)  # window of the watermark -> last state in it
    noted_offset: int | None = None  # next_offset when ``passed`` was last updated

    @classmethod
    def from_position(cls, p: Position) -> "PartitionState":
        return cls(
            p.topic,
            p.partition,
            p.next_offset,
            p.watermark,
            p.late_events,
            p.invalid_events,
            p.next_offset,
            stored_late=p.late_events,
            replay_floor=p.replay.floor if p.replay else 0,
            replay_until=p.replay.until if p.replay else 0,
        )

    @property
    def replaying(self) -> bool:
        """A replay filter still applies to the next offsets of this partition."""
        return self.replay_until > (self.next_offset or 0)

    @property
    def dirty(self) -> bool:
        return self.next_offset is not None and self.next_offset != self.stored_offset

    @property
    def uncommitted(self) -> bool:
        """The sink holds a position that Kafka's committed offset does not show yet."""
        return self.stored_offset is not None and self.stored_offset != self.committed_offset

    def position(self) -> Position:
        assert self.next_offset is not None
        return Position(
            self.topic,
            self.partition,
            self.next_offset,
            self.watermark,
            self.late_events,
            self.invalid_events,
        )


@dataclass
class WorkerState:
    """Everything a worker holds between two flushes."""

    parts: dict[TopicPartition, PartitionState] = field(default_factory=dict)
    partials: State = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    rejects_sent: int = 0  # how many of ``rejects`` the dead-letter topic acknowledged already
    replaying: bool = False  # some partition has an active replay filter: the worker's filtered loop runs

    def check_replaying(self) -> bool:
        """Recompute :attr:`replaying` after the partitions or their positions changed."""
        self.replaying = any(p.replaying for p in self.parts.values())
        return self.replaying

    def note_passed(self, window_step_ms: int) -> None:
        """After each batch: remember each partition's state as the last one of its window of the
        watermark (windows start every ``window_step_ms``: the size for tumbling windows, the step
        for hopping ones, where a replay may start). Written as replay checkpoints with the next
        flush, they let a replay rewind to within a batch of where it must, however rarely the
        flushes come."""
        for p in self.parts.values():
            if p.next_offset != p.noted_offset and p.next_offset is not None:
                p.noted_offset = p.next_offset
                wm = p.watermark
                p.passed[wm if wm == NO_WATERMARK else wm - wm % window_step_ms] = p.position()

    def pending(self) -> list[PositionWrite]:
        """Flush step 1: the positions to write, as of the last event included in the partials."""
        return [
            PositionWrite(p.position(), p.stored_offset, list(p.passed.values()))
            for p in self.parts.values()
            if p.dirty
        ]

    def written(self, positions: list[PositionWrite]) -> None:
        """The sink committed these positions: they are the compare-and-set base from now on."""
        for w in positions:
            part = self.parts.get((w.new.topic, w.new.partition))
            if part is not None:
                part.stored_offset = w.new.next_offset
                part.stored_late = w.new.late_events
                part.passed.clear()

    def clear(self) -> None:
        """Drop every partial and reject: flushed (step 4), or discarded before a rewind."""
        self.partials = {}
        self.rejects = []
        self.rejects_sent = 0
