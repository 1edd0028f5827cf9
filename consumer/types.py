"""The domain: what a partition's position is, what a message that could not be decoded is, and
what a flush or a replay hands the sink. Imported by every stage; imports nothing of eventfleet."""

from dataclasses import dataclass, field

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


@dataclass
class ReplayReset:
    """One replay's reset of a group, applied by :meth:`ReplayableSink.replay_reset` atomically."""

    windows_from: int  # aggregate rows of windows starting here or later are deleted
    positions: list[Position]  # every partition's new position, with its filter (``replay``) if any
    forget_checkpoints: bool = False  # a rebuild from the earliest offsets: old checkpoints may not hold
