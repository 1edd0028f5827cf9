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
"""

import dataclasses
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from .config import IDENTIFIER, Pipeline
from .decode import make_event_decoder
from .errors import ConfigError, EventfleetError
from .groups import Kafka, Member
from .registry import RegistryUnavailable, connect
from .sinks import ReplayableSink, open_sink, replayable
from .sinks.postgres import LONGEST_SUFFIX as PG_TABLE_SUFFIX
from .sinks.postgres import NAME_BYTES as PG_NAME_BYTES
from .types import Position, ReplayFilter, ReplayReset, TopicPartition
from .window import NO_WATERMARK, window_start
from .worker import Worker

log = logging.getLogger(__name__)

DONE_CHECK_S = 1.0  # how often the partitions this replay does not own are looked up in the sink


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


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


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


def resolve_floor(
    pipeline: Pipeline, mode: Mode, kafka: Kafka, offsets: dict[TopicPartition, tuple[int, int]]
) -> tuple[int, str]:
    """The first window to recompute (NO_WATERMARK: all) and a line saying how it was chosen."""
    size = pipeline.window.size_ms
    if mode.kind == "earliest":
        return NO_WATERMARK, "--from-earliest: every window is recomputed (the table is rebuilt)"
    if mode.kind == "timestamp":
        t = mode.timestamp_ms
        floor = -(-t // size) * size  # windows that start at or after t
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
            firsts.append((window_start(found[1], size), topic, partition, found[0], found[1]))
    if not firsts:
        raise ReplayRefused("no event at or after the given offsets: nothing to replay")
    floor, topic, partition, at, t = min(firsts)
    return floor, (
        f"--from-offsets: the earliest window of the events at those offsets is {iso(floor)} ({topic}[{partition}] "
        f"offset {at}, event time {iso(t)}); it and every later window are recomputed, from every partition"
    )


# -- printing and asking ------------------------------------------------------------------------


def print_plan(plan: Plan, out: TextIO, header: str) -> None:
    out.write(header + "\n")
    out.write(f"  {plan.why}\n")
    windows, rows = plan.windows
    out.write(f"  {windows:,} windows ({rows:,} rows) of table {plan.table} are recomputed\n\n")
    head = ("topic", "partition", "current", "new", "end", "to reprocess", "restarts from", "old windows kept below")
    cells: list[tuple[str, ...]] = [head]
    for p in plan.partitions:
        kept = f"offset {p.new.replay.until:,}" if p.new.replay and plan.floor != NO_WATERMARK else "-"
        current = f"{p.current.next_offset:,}" if p.current else "-"
        cells.append((p.tp[0], str(p.tp[1]), current, f"{p.new.next_offset:,}", f"{p.end:,}",
                      f"{p.to_reprocess:,}", p.origin, kept))  # fmt: skip
    cells.append(("total", "", "", "", "", f"{plan.total:,}", "", ""))
    _table(cells, out)


def _table(cells: list[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        line = "  ".join(
            v.ljust(w) if i in (0, 6, 7) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        out.write("  " + line.rstrip() + "\n")


def refuse_members(group: str, members: list[Member], what: str) -> ReplayRefused:
    lines = "; ".join(f"client {m.client_id} on {m.host} ({m.partitions} partitions)" for m in members)
    return ReplayRefused(
        f"consumer group {group!r} has {len(members)} active member(s): {lines}. {what} Stop them first: "
        "kill -TERM the `eventfleet run` supervisor (the ppid in the client id) or `eventfleet worker` process "
        "on each host, or scale the deployment to 0 (kubectl scale deployment/NAME --replicas=0); a member "
        "killed with SIGKILL stays until its session.timeout.ms expires. Then run this again"
    )


def confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ReplayRefused("not asking for confirmation on a non-interactive input: pass --yes to go ahead, "
                            "or --dry-run to only print the plan")  # fmt: skip
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


# -- running it --------------------------------------------------------------------------------


class ReplayWorker(Worker):
    """The ordinary worker (same loop, same flush protocol) that stops once every partition has
    reached the end offsets captured when the replay started, with a progress callback."""

    def __init__(self, pipeline: Pipeline, ends: dict[TopicPartition, int], progress: Callable[[int], object]) -> None:
        # A partition written by transactional producers can end with a commit marker, which no
        # consumer receives: its next offset stays one short of the end. The end-of-partition
        # event says the consumer has read all there is (up to the last stable offset).
        eof = {**pipeline.kafka.config, "enable.partition.eof": True}
        super().__init__(dataclasses.replace(pipeline, kafka=dataclasses.replace(pipeline.kafka, config=eof)))
        self.ends = {tp: end for tp, end in ends.items()}
        self.read_to: dict[TopicPartition, int] = {}  # partition -> offset of its last end-of-partition event
        self.progress = progress
        self.done = False
        self._next_check = 0.0

    def at_end(self, tp: TopicPartition, offset: int) -> None:
        super().at_end(tp, offset)
        self.read_to[tp] = offset

    def _rewind(self, keys: list[TopicPartition]) -> None:
        for tp in keys:  # read again from the sink's position: an earlier end event no longer counts
            self.read_to.pop(tp, None)
        super()._rewind(keys)

    def after_batch(self, messages: int) -> None:
        if messages:
            self.progress(messages)
        parts = self.state.parts
        for tp, end in self.ends.items():
            part = parts.get(tp)
            if part is not None and (part.next_offset or 0) < end and self.read_to.get(tp, -1) < end:
                return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + DONE_CHECK_S
        # Partitions another member took over (a worker started meanwhile continues the replay
        # exactly from the stored filters): wait for their stored positions.
        others = [tp for tp in self.ends if tp not in parts]
        stored = self.sink.read_positions(self.group, others) if others else {}
        if all(tp in stored and stored[tp].next_offset >= self.ends[tp] for tp in others):
            self.done = self.stopping = True


def run_worker(pipeline: Pipeline, plan: Plan, verbose: bool) -> tuple[int, bool, float, float]:
    """Run the replay to the captured end offsets with a progress bar; (events, done, seconds in
    all, seconds from the first event to the last)."""
    from .progress import Progress

    ends = {p.tp: p.end for p in plan.partitions}
    quiet = logging.getLogger("consumer")
    level = quiet.level
    if not verbose:
        quiet.setLevel(logging.WARNING)  # flush lines would bury the progress bar
    started = time.perf_counter()
    with Progress(plan.total, "replay") as bar:

        def progress(n: int) -> None:
            if bar.n == 0:
                bar.restart()  # events/s and the ETA count from the first event, not the group join
            bar.update(n)

        worker = ReplayWorker(pipeline, ends, progress)
        try:
            worker.run()
        finally:
            quiet.setLevel(level)
    active = worker.last_event_at - (worker.first_event_at or worker.last_event_at)
    return worker.events, worker.done, time.perf_counter() - started, active


# -- the command ----------------------------------------------------------------------------------


def shadow_pipeline(pipeline: Pipeline, table: str) -> Pipeline:
    """The pipeline writing into ``table`` with its own consumer group."""
    group = f"{pipeline.kafka.group_id}.replay.{table}"
    return dataclasses.replace(
        pipeline,
        sink=dataclasses.replace(pipeline.sink, table=table),
        kafka=dataclasses.replace(pipeline.kafka, group_id=group),
    )


def replay(
    pipeline: Pipeline,
    mode: Mode | None,
    into: str | None = None,
    swap: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """``eventfleet replay``; returns the exit code."""
    live = replayable(open_sink(pipeline), pipeline.sink.type)
    kafka = Kafka(pipeline)
    try:
        shadow = None
        if into is not None:
            shadow = _check_shadow_name(pipeline, live, into)
        if swap and shadow is None:
            raise ConfigError("--swap", "promotes a shadow table", "give --into TABLE too")
        if mode is None:
            if shadow is None or not swap:
                raise ConfigError("replay", "nothing to do", "give --from-timestamp, --from-earliest or --from-offsets")
            return _swap(pipeline, shadow, live, kafka, dry_run, yes, out)
        if swap and not dry_run and (members := kafka.members(pipeline.kafka.group_id)):
            raise refuse_members(pipeline.kafka.group_id, members,
                                 "--swap promotes the shadow table once the replay is done, so the live fleet "
                                 "must be stopped; or replay --into without --swap now and swap later.")  # fmt: skip
        code = _replay(pipeline, shadow, live, kafka, mode, dry_run, yes, verbose, out)
        if code == 0 and swap and shadow is not None and not dry_run:
            return _swap(pipeline, shadow, live, kafka, False, True, out)
        return code
    finally:
        kafka.close()
        live.close()


def _check_shadow_name(pipeline: Pipeline, live: ReplayableSink, into: str) -> Pipeline:
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


def _replay(
    pipeline: Pipeline,
    shadow: Pipeline | None,
    live: ReplayableSink,
    kafka: Kafka,
    mode: Mode,
    dry_run: bool,
    yes: bool,
    verbose: bool,
    out: TextIO,
) -> int:
    target = shadow or pipeline
    group = target.kafka.group_id
    partitions = kafka.partitions()
    offsets = kafka.offsets(partitions)
    floor, why = resolve_floor(pipeline, mode, kafka, offsets)
    members = kafka.members(group)
    sink: ReplayableSink | None = None
    clone = shadow is not None and not _shadow_started(live, shadow, partitions)
    try:
        if clone:
            plan = make_plan(live, pipeline.kafka.group_id, pipeline.sink.table, floor, why, offsets)
            header = (
                f"replay into the new table {target.sink.table} (group {group}): a snapshot of {pipeline.sink.table} "
                f"(its rows of the windows kept, its positions, checkpoints and rejects) is copied, then replayed "
                f"there; {pipeline.sink.table} and group {pipeline.kafka.group_id} are left untouched"
            )
        else:
            sink = live if shadow is None else replayable(open_sink(target), target.sink.type)
            plan = make_plan(sink, group, target.sink.table, floor, why, offsets)
            header = f"replay of group {group} into table {target.sink.table} ({_where(target)})"
        print_plan(plan, out, header)
        if dry_run:
            if members:
                out.write(f"\nnote: {refuse_members(group, members, 'A replay now would be refused.')}\n")
            return 0
        if members:
            raise refuse_members(group, members, "Replaying under a running fleet would race its workers.")
        windows, rows = plan.windows
        if not confirm(f"recompute {windows:,} windows ({rows:,} rows), reprocessing {plan.total:,} messages?", yes):
            out.write("nothing done\n")
            return 1
        if clone:
            assert shadow is not None
            sink = replayable(open_sink(target), target.sink.type)  # creates the empty tables
            live.replay_clone(target.sink.table, pipeline.kafka.group_id, group, floor)
            plan = make_plan(sink, group, target.sink.table, floor, why, offsets)  # from the snapshot copied
        assert sink is not None
        sink.replay_reset(group, plan.reset())  # one transaction: rows, positions, filters
        kafka.commit(group, {p.tp: p.new.next_offset for p in plan.partitions})  # then Kafka, like a flush
        log.info("replay started: positions and filters stored, offsets committed")
        events, done, seconds, active = run_worker(target, plan, verbose)
        windows, rows = sink.replay_windows(floor)
    finally:
        if sink is not None and sink is not live:
            sink.close()
    if not done:
        out.write(
            f"replay interrupted after {events:,} events: rerun the same command to redo it, or start the fleet, "
            "which continues it exactly (the replay's filters are stored with the positions)\n"
        )
        return 1
    since = "" if floor == NO_WATERMARK else f" from {iso(floor)}"
    out.write(
        f"replayed {events:,} events in {seconds:.1f} s ({events / max(active, 1e-3):,.0f} events/s from the first "
        f"to the last), recomputed {windows:,} windows ({rows:,} rows){since} in table {target.sink.table}\n"
    )
    return 0


def _where(pipeline: Pipeline) -> str:
    """The sink's database, for the plan's header (a DSN is shown without its password)."""
    if pipeline.sink.type == "postgres":
        from .sinks.postgres import describe_target

        return f"postgres at {describe_target(pipeline.sink.dsn or '')}"
    return f"{pipeline.sink.type} {pipeline.sink.path}"


def _shadow_started(live: ReplayableSink, shadow: Pipeline, partitions: list[TopicPartition]) -> bool:
    """Whether the shadow table already holds a replay (then it is replayed again, in place)."""
    if not live.replay_table_exists(shadow.sink.table):
        return False
    sink = replayable(open_sink(shadow), shadow.sink.type)
    try:
        return bool(sink.read_positions(shadow.kafka.group_id, partitions)) or sink.replay_windows(NO_WATERMARK)[1] > 0
    finally:
        sink.close()


def _swap(
    pipeline: Pipeline, shadow: Pipeline, live: ReplayableSink, kafka: Kafka, dry_run: bool, yes: bool, out: TextIO
) -> int:
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
    head = ("topic", "partition", f"{pipeline.sink.table} (live)", f"{table} (shadow)", "end", "left to process")
    cells: list[tuple[str, ...]] = [head]
    for tp in partitions:
        mine, new = ours.get(tp), theirs.get(tp)
        left = max(0, ends[tp][1] - new.next_offset) if new else 0
        cells.append((tp[0], str(tp[1]), f"{mine.next_offset:,}" if mine else "-",
                      f"{new.next_offset:,}" if new else "-", f"{ends[tp][1]:,}", f"{left:,}"))  # fmt: skip
    out.write(
        f"swap: table {table} (group {other}) becomes {pipeline.sink.table} (group {group}), and the current "
        f"{pipeline.sink.table} becomes {table}; the live fleet then continues from the shadow's positions\n"
    )
    _table(cells, out)
    for g in (group, other):
        if members := kafka.members(g):
            if dry_run:
                out.write(f"\nnote: {refuse_members(g, members, 'A swap now would be refused.')}\n")
            else:
                raise refuse_members(g, members, "A swap needs both the live fleet and the shadow replay stopped.")
    if dry_run:
        return 0
    if not confirm(f"swap {pipeline.sink.table} and {table}?", yes):
        out.write("nothing done\n")
        return 1
    live.replay_swap(table, group, other)  # one transaction: tables renamed, groups exchanged
    kafka.commit(group, {tp: p.next_offset for tp, p in theirs.items()})
    if ours:
        kafka.commit(other, {tp: p.next_offset for tp, p in ours.items()})
    out.write(
        f"swapped: {pipeline.sink.table} now holds the replayed results (group {group} continues from their "
        f"positions); the previous results are in {table}\n"
    )
    return 0
