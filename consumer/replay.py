"""``eventfleet replay``: recompute windows from a time, from the earliest offsets, or from offsets,
exactly (docs/replay.md; docs/design.md, "Replay").

A replay from window start F (per partition, all of them, in one sink transaction):

1. rewind to S, the last **checkpoint** whose watermark is below F (the sink keeps the position
   of every flush, the last one per window of the watermark). Every event before S has a time
   at or below that watermark, so none belongs to a window from F on; and the checkpoint's
   watermark and late count are exactly those of a fresh run at S, so every event from S on is
   judged late or not exactly as in a fresh run;
2. delete the rows of windows from F on, set the position to the checkpoint and store a replay
   filter (floor F, until P), P being where the partition stood before: below P, events of
   windows before F are already in the kept rows and are not aggregated again. Commit the same
   offsets to Kafka;
3. run a worker until every partition reaches the end offsets captured at the start.

A rerun after a crash keeps the first P (the filter's ``until``, larger than the position while
the filter is active), so nothing is counted twice. ``--from-earliest`` deletes every row and
starts every partition from its earliest offset with a fresh state. ``--from-offsets`` replays
from the earliest window of the events at the given offsets. ``--into TABLE`` does the same in
a copy of the table under its own consumer group; ``--swap`` promotes it.

This module carries a replay out: it finds the floor (``resolve_floor``), stores the plan that
consumer/replay_plan.py makes (``prepare``, ``Replay.start``), runs the replay worker to the end offsets
(``run_worker``), and swaps a shadow table in (``check_swap``, ``swap``). It prints nothing and
asks nothing: consumer/commands/replay.py does, between these steps.
"""

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import IDENTIFIER, Pipeline
from .decode import make_event_decoder
from .errors import ConfigError
from .groups import Kafka, Member
from .registry import RegistryUnavailable, connect
from .replay_plan import Mode, Plan, ReplayRefused, make_plan
from .sinks import ReplayableSink, open_sink, replayable
from .sinks.postgres import LONGEST_SUFFIX as PG_TABLE_SUFFIX
from .sinks.postgres import NAME_BYTES as PG_NAME_BYTES
from .types import Position, TopicPartition
from .window import NO_WATERMARK, iso, window_starts
from .worker import Worker, build

log = logging.getLogger(__name__)

DONE_CHECK_S = 1.0  # how often the partitions this replay does not own are looked up in the sink


# -- where to start -------------------------------------------------------------------------------


def resolve_floor(
    pipeline: Pipeline, mode: Mode, kafka: Kafka, offsets: dict[TopicPartition, tuple[int, int]]
) -> tuple[int, str]:
    """The first window to recompute (NO_WATERMARK: all) and a line saying how it was chosen."""
    size, step = pipeline.window.size_ms, pipeline.window.step_ms  # windows start every step
    if mode.kind == "earliest":
        return NO_WATERMARK, "--from-earliest: every window is recomputed (the table is rebuilt)"
    if mode.kind == "timestamp":
        t = mode.timestamp_ms
        floor = -(-t // step) * step  # windows that start at or after t
        rounded = "" if floor == t else f" (the first window that starts at or after {iso(t)})"
        return floor, f"windows from {iso(floor)}{rounded} are recomputed; earlier windows are kept as they are"
    topics = pipeline.kafka.topics
    time_field = pipeline.window.time_field
    registry = connect(pipeline.registry) if pipeline.registry else None
    decode = make_event_decoder(dict(pipeline.schema), [time_field] if time_field else [], registry)

    def event_time(msg: Any) -> int | None:
        try:
            record = decode(msg.value())
        except RegistryUnavailable:
            raise  # not the message's fault: the plan cannot be made without the registry
        except Exception:
            return None  # undecodable: no event time; the next message is looked at
        return int(record[0]) if time_field else int(msg.timestamp()[1])

    firsts = []
    for topic, partition, offset in mode.offsets:
        if topic is None:
            if len(topics) > 1:
                raise ConfigError("--from-offsets", "the pipeline reads several topics", "write TOPIC:PARTITION:OFFSET")
            topic = topics[0]
        if (topic, partition) not in offsets:
            raise ConfigError("--from-offsets", f"{topic}[{partition}] does not exist", f"use partitions of {topics}")
        low, high = offsets[(topic, partition)]
        if not low <= offset <= high:
            raise ConfigError(
                "--from-offsets", f"offset {offset} of {topic}[{partition}] is outside {low}..{high}",
                "give an offset the topic still holds (between its earliest and end offsets)",
            )  # fmt: skip
        found = kafka.first_event((topic, partition), offset, high, event_time)
        if found is not None:
            oldest = window_starts(found[1], size, step)[0]  # the event's oldest window
            firsts.append((oldest, topic, partition, found[0], found[1]))
    if not firsts:
        raise ReplayRefused("no event at or after the given offsets: nothing to replay")
    floor, topic, partition, at, t = min(firsts)
    return floor, (
        f"--from-offsets: the earliest window of the events at those offsets is {iso(floor)} ({topic}[{partition}] "
        f"offset {at}, event time {iso(t)}); it and every later window are recomputed, from every partition"
    )


# -- running it --------------------------------------------------------------------------------


class ReplayEnd:
    """The replay's ``after_batch`` hook (worker.AfterBatch): the progress callback, and the stop
    once every partition has reached the end offsets captured when the replay started. The
    worker is the ordinary one: same loop, same flush protocol."""

    def __init__(self, ends: dict[TopicPartition, int], progress: Callable[[int], object]) -> None:
        self.ends = dict(ends)
        self.progress = progress
        self.done = False
        self._next_check = 0.0

    def __call__(self, worker: Worker, messages: int) -> bool:
        if messages:
            self.progress(messages)
        parts = worker.state.parts
        for tp, end in self.ends.items():
            part = parts.get(tp)
            # A partition written by transactional producers can end with a commit marker, which no
            # consumer receives: its next offset stays one short of the end. The end-of-partition
            # event says the consumer has read all there is (up to the last stable offset).
            if part is not None and (part.next_offset or 0) < end and worker.end_offsets.get(tp, -1) < end:
                return False
        now = worker.clock.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + DONE_CHECK_S
        # Partitions another member took over (a worker started meanwhile continues the replay
        # exactly from the stored filters): wait for their stored positions.
        others = [tp for tp in self.ends if tp not in parts]
        stored = worker.sink.read_positions(worker.group, others) if others else {}
        self.done = all(tp in stored and stored[tp].next_offset >= self.ends[tp] for tp in others)
        return self.done


def run_worker(pipeline: Pipeline, plan: Plan, progress: Callable[[int], object]) -> tuple[int, bool, float, float]:
    """Run the replay to the captured end offsets, ``progress(n)`` after each batch of n events;
    (events, done, seconds in all, seconds from the first event to the last)."""
    ends = {p.tp: p.end for p in plan.partitions}
    # the end-of-partition events tell the transactional topics' ends (ReplayEnd)
    eof = {**pipeline.kafka.config, "enable.partition.eof": True}
    pipeline = dataclasses.replace(pipeline, kafka=dataclasses.replace(pipeline.kafka, config=eof))
    started = time.perf_counter()
    end = ReplayEnd(ends, progress)
    worker = build(pipeline, after_batch=end)
    worker.run()
    active = worker.last_event_at - (worker.first_event_at or worker.last_event_at)
    return worker.events, end.done, time.perf_counter() - started, active


# -- the shadow table (--into, --swap) --------------------------------------------------------------


def shadow_pipeline(pipeline: Pipeline, table: str) -> Pipeline:
    """The pipeline writing into ``table`` with its own consumer group."""
    group = f"{pipeline.kafka.group_id}.replay.{table}"
    return dataclasses.replace(
        pipeline,
        sink=dataclasses.replace(pipeline.sink, table=table),
        kafka=dataclasses.replace(pipeline.kafka, group_id=group),
    )


def check_shadow_name(pipeline: Pipeline, live: ReplayableSink, into: str) -> Pipeline:
    """The shadow pipeline of ``--into TABLE``, once the name is known to be usable."""
    if not IDENTIFIER.match(into):
        raise ConfigError("--into", f"{into!r} is not a plain table name", "use letters, digits and _")
    if pipeline.sink.type == "postgres" and len((into + PG_TABLE_SUFFIX).encode()) > PG_NAME_BYTES:
        most = PG_NAME_BYTES - len(PG_TABLE_SUFFIX)
        raise ConfigError("--into", f"{into!r} is too long for PostgreSQL ({into}{PG_TABLE_SUFFIX} must fit in "
                          f"{PG_NAME_BYTES} bytes)", f"use at most {most} characters")  # fmt: skip
    shadow = shadow_pipeline(pipeline, into)
    ours = live.replay_tables()
    suffixes = [name[len(pipeline.sink.table) :] for name in ours]
    if set(ours) & {into + suffix for suffix in suffixes}:
        raise ConfigError("--into", f"{into!r} clashes with the live table {pipeline.sink.table!r} or its companions",
                          "pick another name")  # fmt: skip
    return shadow


def shadow_started(live: ReplayableSink, shadow: Pipeline, partitions: list[TopicPartition]) -> bool:
    """Whether the shadow table already holds a replay (then it is replayed again, in place)."""
    if not live.replay_table_exists(shadow.sink.table):
        return False
    sink = replayable(open_sink(shadow), shadow.sink.type)
    try:
        return bool(sink.read_positions(shadow.kafka.group_id, partitions)) or sink.replay_windows(NO_WATERMARK)[1] > 0
    finally:
        sink.close()


# -- a replay: prepared, started, run ---------------------------------------------------------------


@dataclass
class Replay:
    """A replay planned, not started yet. Its caller checks ``members`` (a replay under a running
    fleet would race its workers) and closes it."""

    pipeline: Pipeline  # the live pipeline
    target: Pipeline  # where the replay writes: the live pipeline, or the shadow's (--into)
    live: ReplayableSink
    kafka: Kafka
    plan: Plan
    offsets: dict[TopicPartition, tuple[int, int]]  # earliest and end offsets, captured at the start
    members: list[Member]  # the target group's active members
    clone: bool  # a new shadow table: planned from the live table, whose snapshot start() copies
    sink: ReplayableSink | None = None  # the target's sink (a new shadow's once start() made it)

    @property
    def group(self) -> str:
        return self.target.kafka.group_id

    def start(self) -> None:
        """Store the plan, then commit its offsets: from here on the replay is under way, and a
        rerun or the fleet continues it exactly (docs/design.md, "Replay", step 2)."""
        if self.clone:
            table, floor = self.target.sink.table, self.plan.floor
            self.sink = replayable(open_sink(self.target), self.target.sink.type)  # creates the empty tables
            self.live.replay_clone(table, self.pipeline.kafka.group_id, self.group, floor)
            self.plan = make_plan(self.sink, self.group, table, floor, self.plan.why, self.offsets)  # from the copy
        assert self.sink is not None
        self.sink.replay_reset(self.group, self.plan.reset())  # one transaction: rows, positions, filters
        self.kafka.commit(self.group, {p.tp: p.new.next_offset for p in self.plan.partitions})  # then Kafka
        log.info("replay started: positions and filters stored, offsets committed")

    def recomputed(self) -> tuple[int, int]:
        """Windows and rows from the floor on, as the target table holds them now."""
        assert self.sink is not None
        return self.sink.replay_windows(self.plan.floor)

    def close(self) -> None:
        if self.sink is not None and self.sink is not self.live:  # the live sink is the caller's
            self.sink.close()


def prepare(pipeline: Pipeline, shadow: Pipeline | None, live: ReplayableSink, kafka: Kafka, mode: Mode) -> Replay:
    """The plan of a replay of the live table, or of the shadow's with ``shadow`` (--into)."""
    target = shadow or pipeline
    group = target.kafka.group_id
    partitions = kafka.partitions()
    offsets = kafka.offsets(partitions)
    floor, why = resolve_floor(pipeline, mode, kafka, offsets)
    members = kafka.members(group)
    if shadow is not None and not shadow_started(live, shadow, partitions):
        plan = make_plan(live, pipeline.kafka.group_id, pipeline.sink.table, floor, why, offsets)
        return Replay(pipeline, target, live, kafka, plan, offsets, members, clone=True)
    sink = live if shadow is None else replayable(open_sink(target), target.sink.type)
    try:
        plan = make_plan(sink, group, target.sink.table, floor, why, offsets)
    except BaseException:
        if sink is not live:
            sink.close()
        raise
    return Replay(pipeline, target, live, kafka, plan, offsets, members, clone=False, sink=sink)


# -- the swap ---------------------------------------------------------------------------------------


@dataclass
class Swap:
    """A shadow table that covers every partition, ready to become the live one. Its caller
    checks ``members`` (both fleets must be stopped)."""

    pipeline: Pipeline  # the live pipeline
    shadow: Pipeline
    partitions: list[TopicPartition]
    ends: dict[TopicPartition, tuple[int, int]]  # earliest and end offsets
    ours: dict[TopicPartition, Position]  # the live table's positions
    theirs: dict[TopicPartition, Position]  # the shadow table's positions
    members: dict[str, list[Member]] = field(default_factory=dict)  # active members of each group


def check_swap(pipeline: Pipeline, shadow: Pipeline, live: ReplayableSink, kafka: Kafka) -> Swap:
    """The swap of ``shadow``'s table in; refused unless it holds a position for every partition
    that has events (or that the live table has a position for)."""
    group, other = pipeline.kafka.group_id, shadow.kafka.group_id
    table = shadow.sink.table
    partitions = kafka.partitions()
    ends = kafka.offsets(partitions)
    if not live.replay_table_exists(table):
        raise ReplayRefused(f"there is no table {table!r} to swap in: replay --into {table} first")
    sink = replayable(open_sink(shadow), shadow.sink.type)
    try:
        theirs = sink.read_positions(other, partitions)
    finally:
        sink.close()
    ours = live.read_positions(group, partitions)
    missing = [tp for tp in partitions if tp not in theirs and (tp in ours or ends[tp][1] > ends[tp][0])]
    if missing:
        raise ReplayRefused(
            f"table {table!r} has no position for {', '.join(f'{t}[{p}]' for t, p in missing)} under group {other!r}: "
            f"it did not cover every partition. Replay --into {table} again to complete it"
        )
    return Swap(pipeline, shadow, partitions, ends, ours, theirs, {g: kafka.members(g) for g in (group, other)})


def swap(s: Swap, live: ReplayableSink, kafka: Kafka) -> None:
    """Exchange the tables and the groups in one sink transaction, then each group's offsets."""
    group, other = s.pipeline.kafka.group_id, s.shadow.kafka.group_id
    live.replay_swap(s.shadow.sink.table, group, other)  # one transaction: tables renamed, groups exchanged
    kafka.commit(group, {tp: p.next_offset for tp, p in s.theirs.items()})
    if s.ours:
        kafka.commit(other, {tp: p.next_offset for tp, p in s.ours.items()})
