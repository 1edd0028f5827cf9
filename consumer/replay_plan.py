"""The replay's plan, pure: what to replay (the options, parsed), and where each partition
restarts with which filter (docs/replay.md; docs/design.md, "Replay"). No I/O here: the positions
and checkpoints come from the sink it is given; consumer/replay.py carries the plan out, and
consumer/commands/replay.py shows it and asks.
"""

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from .errors import ConfigError, EventfleetError
from .sinks import ReplayableSink
from .types import Position, ReplayFilter, ReplayReset, TopicPartition
from .window import NO_WATERMARK, iso

if TYPE_CHECKING:  # consumer.groups asks Kafka; the plan only names its members
    from .groups import Member


class ReplayRefused(EventfleetError):
    """The replay cannot be done (exactly, or now): the message says why and what to do."""


# -- what to replay ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One of --from-timestamp, --from-earliest, --from-offsets, as given."""

    kind: Literal["timestamp", "earliest", "offsets"]
    timestamp_ms: int = 0
    offsets: tuple[tuple[str | None, int, int], ...] = ()  # (topic or None, partition, offset)


def parse_timestamp(text: str) -> int:
    """``2026-11-20T10:00:00Z`` (ISO 8601; no zone means UTC) or epoch milliseconds."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            "--from-timestamp",
            f"{text!r} is neither an ISO 8601 time nor epoch milliseconds",
            "write e.g. 2026-11-20T10:00:00Z or 1795168800000",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_offsets(text: str) -> tuple[tuple[str | None, int, int], ...]:
    """``0:1200,1:900`` (partition:offset, one topic) or ``TOPIC:0:1200,...``."""
    out: list[tuple[str | None, int, int]] = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        parts = item.split(":")
        try:
            if len(parts) == 2:
                out.append((None, int(parts[0]), int(parts[1])))
            elif len(parts) == 3 and parts[0]:
                out.append((parts[0], int(parts[1]), int(parts[2])))
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(
                "--from-offsets",
                f"{item!r} is not PARTITION:OFFSET or TOPIC:PARTITION:OFFSET",
                "write e.g. --from-offsets 0:1200,1:900",
            ) from None
        if out[-1][1] < 0 or out[-1][2] < 0:
            raise ConfigError("--from-offsets", f"{item!r}: partitions and offsets are >= 0", "write e.g. 0:1200")
    if not out:
        raise ConfigError("--from-offsets", "no partition given", "write e.g. --from-offsets 0:1200,1:900")
    return tuple(out)


# -- the plan ---------------------------------------------------------------------------------


@dataclass
class PartitionPlan:
    tp: TopicPartition
    current: Position | None  # the stored position (and its filter), None: never written
    new: Position  # where the replay starts, with its filter
    end: int  # the end offset captured at the start
    origin: str  # why the replay starts there

    @property
    def to_reprocess(self) -> int:
        return max(0, self.end - self.new.next_offset)


@dataclass
class Plan:
    group: str
    table: str
    floor: int  # windows starting here or later are recomputed (NO_WATERMARK: all)
    why: str  # how the floor was chosen
    partitions: list[PartitionPlan]
    windows: tuple[int, int] = (0, 0)  # windows and rows deleted

    @property
    def total(self) -> int:
        return sum(p.to_reprocess for p in self.partitions)

    def reset(self) -> ReplayReset:
        return ReplayReset(self.floor, [p.new for p in self.partitions], self.floor == NO_WATERMARK)


def plan_partition(
    tp: TopicPartition,
    current: Position | None,
    checkpoint: Position | None,
    earliest: int,
    end: int,
    floor: int,
) -> PartitionPlan:
    """Where one partition restarts for a replay from window ``floor`` (NO_WATERMARK: from the
    earliest offset), and the filter that keeps events of kept windows from counting twice.

    ``checkpoint`` is the latest checkpoint whose watermark is below ``floor`` and whose offset is
    at most ``until`` (see below). Refuses when no exact restart point exists.
    """
    topic, partition = tp
    name = f"{topic}[{partition}]"
    position = current.next_offset if current is not None else 0
    active = current.replay if current is not None else None
    # Kept windows hold every event below ``until``: the position, or during an unfinished replay
    # the position it started from (a rerun after a crash must not count [position, until) twice).
    until = max(position, active.until if active else 0)
    if active is not None and floor != NO_WATERMARK and active.floor < floor:
        began = "the earliest offsets" if active.floor == NO_WATERMARK else iso(active.floor)
        raise ReplayRefused(
            f"{name} is in the middle of a replay from {began} (at offset {position} of {active.until}): its "
            "windows from then on are only partly rebuilt, so a replay from a later time cannot be exact. "
            f"Finish it first: rerun it (from {began} or earlier, or --from-earliest), or start the fleet, "
            "which continues it"
        )
    if floor == NO_WATERMARK:
        start = Position(topic, partition, earliest, NO_WATERMARK)
        origin = "earliest offset"
    elif checkpoint is not None:
        start = checkpoint
        wm = "no event yet" if checkpoint.watermark == NO_WATERMARK else f"watermark {iso(checkpoint.watermark)}"
        origin = f"checkpoint ({wm})"
    elif current is None or earliest == 0:
        start = Position(topic, partition, earliest, NO_WATERMARK)  # exactly how a fresh run starts
        origin = "earliest offset (no checkpoint before)"
    else:
        raise ReplayRefused(
            f"{name} has no checkpoint with a watermark before {iso(floor)}, and the topic no longer holds "
            f"its offsets below {earliest}: the state a fresh run would have there is unknown. Replay from a "
            "later time, or --from-earliest (recomputes everything from what the topic retains)"
        )
    if start.next_offset < earliest:
        raise ReplayRefused(
            f"{name}: the replay must reread from offset {start.next_offset} (the last checkpoint before "
            f"{iso(floor)}), but the topic retains offsets from {earliest} only. Replay from a later time, or "
            "--from-earliest (recomputes everything from what the topic retains)"
        )
    replay_filter = ReplayFilter(floor, until) if until > start.next_offset else None
    new = dataclasses.replace(start, replay=replay_filter)
    return PartitionPlan(tp, current, new, end, origin)


def make_plan(
    sink: ReplayableSink,
    group: str,
    table: str,
    floor: int,
    why: str,
    offsets: dict[TopicPartition, tuple[int, int]],
) -> Plan:
    """The plan for every partition, from the sink's positions, filters and checkpoints."""
    current = sink.read_positions(group, list(offsets))
    untils = {
        tp: max(p.next_offset, p.replay.until if p.replay else 0) if (p := current.get(tp)) else 0 for tp in offsets
    }
    checkpoints = sink.replay_checkpoints(group, floor, untils) if floor != NO_WATERMARK else {}
    parts = [
        plan_partition(tp, current.get(tp), checkpoints.get(tp), low, high, floor)
        for tp, (low, high) in offsets.items()
    ]
    return Plan(group, table, floor, why, parts, sink.replay_windows(floor))


def refuse_members(group: str, members: list["Member"], what: str) -> ReplayRefused:
    lines = "; ".join(f"client {m.client_id} on {m.host} ({m.partitions} partitions)" for m in members)
    return ReplayRefused(
        f"consumer group {group!r} has {len(members)} active member(s): {lines}. {what} Stop them first: "
        "kill -TERM the `eventfleet run` supervisor (the ppid in the client id) or `eventfleet worker` process "
        "on each host, or scale the deployment to 0 (kubectl scale deployment/NAME --replicas=0); a member "
        "killed with SIGKILL stays until its session.timeout.ms expires. Then run this again"
    )
