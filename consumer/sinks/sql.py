"""What the SQL sinks (SQLite, PostgreSQL) share, written once: the six tables, the flush
transaction (compare-and-set of the positions, the merge of the partials, the checkpoints and
replay filters, the rejects), the pipeline signature, and the replay operations (reset, clone,
swap). Each database supplies only its :class:`Dialect` (placeholders, types, min/max) and the
hooks of :class:`SqlSink` (connection, transaction, catalog look-ups, and optionally a faster merge).

Tables (docs/sinks.md, "What the sink holds"): ``<table>`` (the aggregates), ``<table>_positions``
(per group/topic/partition: next offset, watermark, late and invalid counts), ``<table>_rejects``
(undecodable messages), ``<table>_pipeline`` (what the table computes), ``<table>_checkpoints``
(past positions, one per window of the watermark) and ``<table>_replay`` (the filters of an
unfinished replay). Tables created before replay existed (without the last two) are upgraded
additively: opening the sink creates the missing tables and changes nothing else.
"""

import contextlib
import json
import os
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import faults
from ..aggregate import (
    MERGE_RULES,
    SKETCH_KINDS,
    Key,
    Partial,
    State,
    estimate_columns,
    merge_sketches,
    sketch_column,
    sketch_from_bytes,
    stored_values,
)
from ..config import Pipeline
from ..errors import PositionConflict, SinkError
from ..types import Position, PositionWrite, Reject, ReplayFilter, ReplayReset, TopicPartition
from ..window import NO_WATERMARK
from .base import ReplayableSink

TABLE_SUFFIXES = ("", "_positions", "_rejects", "_pipeline", "_checkpoints", "_replay")
GROUP_TABLES = ("_positions", "_checkpoints", "_replay")  # the tables keyed by consumer group
# Checkpoints: one per window of the watermark (lossless for window-aligned replays); those more
# than CHECKPOINT_DENSE_MS of event time behind a partition's watermark are thinned to one per
# CHECKPOINT_SPARSE_MS. Any subset of checkpoints is still exact: a replay may just rewind further.
CHECKPOINT_DENSE_MS = 7 * 24 * 3_600_000
CHECKPOINT_SPARSE_MS = 3_600_000
SKETCH_READ_PARAMS = 900  # key values per read of the stored sketches (SQLite's old limit: 999)
SWAP_PARKED = "eventfleet_swap"  # short: PostgreSQL names are 63 bytes, and live + suffix fits

# the types of the companion tables' columns, named so that no Avro type can clash with them
INT32, INT64, BYTES = "<int32>", "<int64>", "<bytes>"
Column = tuple[str, str, bool]  # name, the dialect's type, NOT NULL
Cursor = Any  # sqlite3.Cursor or psycopg.Cursor: execute, executemany, rowcount, fetchone, fetchall


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases in the statements :class:`SqlSink` writes."""

    name: str  # for messages: "SQLite", "PostgreSQL"
    types: Mapping[str, str]  # Avro type of an aggregate column, and INT32, INT64, BYTES -> SQL type
    text: str  # the type of every other column
    least: str  # two-argument min and max
    greatest: str
    percent_placeholders: bool  # %s placeholders (and a literal % doubled) instead of ?
    row_id: str  # the hidden column that names a row within one statement
    lock_rows: str  # appended to a SELECT to lock the rows it reads until the end of the transaction

    def sql(self, text: str) -> str:
        """A statement written with ``?`` placeholders, in this dialect."""
        return text.replace("%", "%%").replace("?", "%s") if self.percent_placeholders else text

    def type(self, avro_or_logical: str) -> str:
        return self.types.get(avro_or_logical, self.text)


def q(name: str) -> str:
    """A quoted identifier (table names are checked identifiers: config.py's _identifier)."""
    return f'"{name}"'


def pipeline_signature(pipeline: Pipeline) -> str:
    """What the aggregates table means: window size, grouping and each metric's rule."""
    return json.dumps(
        {
            "window_ms": pipeline.window.size_ms,
            **({"step_ms": pipeline.window.step_ms} if pipeline.window.hopping else {}),
            "group_by": list(pipeline.aggregate.group_by),
            "metrics": {m.name: _rule(m) for m in pipeline.aggregate.metrics},
        },
        sort_keys=True,
    )


def _rule(m: Any) -> str:
    """A metric's rule in the signature; a sketch's size too: sketches of another size merge into
    a coarser sketch, not the one the pipeline asks for."""
    if m.kind == "distinct":
        return f"distinct:{m.field}:lg_k={m.lg_k}"
    if m.kind == "quantiles":
        return f"quantiles:{m.field}:k={m.k}"
    return f"{m.kind}:{m.field}" if m.field else str(m.kind)


def tables(pipeline: Pipeline, dialect: Dialect) -> dict[str, list[Column]]:
    """Every table of the sink with its columns, in order."""
    table = pipeline.sink.table
    text, int32, int64, data = dialect.text, dialect.type(INT32), dialect.type(INT64), dialect.type(BYTES)
    return {
        table: [(c, dialect.type(t), True) for c, t in pipeline.column_types().items()],
        f"{table}_positions": [
            ("consumer_group", text, True), ("topic", text, True), ("partition", int32, True),
            ("next_offset", int64, True), ("watermark", int64, True), ("late_events", int64, True),
            ("invalid_events", int64, True), ("updated_at_ms", int64, True),
        ],
        f"{table}_rejects": [
            ("topic", text, True), ("partition", int32, True), ("kafka_offset", int64, True),
            ("timestamp_ms", int64, True), ("key", data, False), ("value", data, False), ("error", text, True),
        ],
        f"{table}_pipeline": [("key", text, True), ("value", text, True)],
        f"{table}_checkpoints": [
            ("consumer_group", text, True), ("topic", text, True), ("partition", int32, True),
            ("watermark_window", int64, True), ("next_offset", int64, True), ("watermark", int64, True),
            ("late_events", int64, True), ("invalid_events", int64, True), ("written_at_ms", int64, True),
        ],
        f"{table}_replay": [
            ("consumer_group", text, True), ("topic", text, True), ("partition", int32, True),
            ("windows_from", int64, True), ("until_offset", int64, True), ("started_at_ms", int64, True),
        ],
    }  # fmt: skip


def primary_keys(pipeline: Pipeline) -> dict[str, list[str]]:
    table = pipeline.sink.table
    return {
        table: ["window_start", *pipeline.aggregate.group_by],
        f"{table}_positions": ["consumer_group", "topic", "partition"],
        f"{table}_rejects": ["topic", "partition", "kafka_offset"],
        f"{table}_pipeline": ["key"],
        f"{table}_checkpoints": ["consumer_group", "topic", "partition", "watermark_window"],
        f"{table}_replay": ["consumer_group", "topic", "partition"],
    }


def create_table(name: str, columns: Sequence[Column], key: Sequence[str]) -> str:
    defs = [f"{q(c)} {t}{' NOT NULL' if not_null else ''}" for c, t, not_null in columns]
    return f"CREATE TABLE {q(name)} ({', '.join(defs)}, PRIMARY KEY ({', '.join(map(q, key))}))"


def companions(table: str) -> str:
    return ", ".join(table + suffix for suffix in TABLE_SUFFIXES)


def mismatch(name: str, found: Iterable[tuple[str, str]], columns: Sequence[Column], table: str) -> SinkError:
    def show(cols: Iterable[tuple[str, str]]) -> str:
        return "(" + ", ".join(f"{c} {t}" for c, t in cols) + ")"

    return SinkError(
        f"table {name!r} has columns {show(found)}, but the pipeline writes {show((c, t) for c, t, _ in columns)}. "
        f"Use another [sink] table, or drop the old tables ({companions(table)}) to recompute from the topic"
    )


def check_signature(cur: Cursor, dialect: Dialect, table: str, wanted: str, place: str, create: bool) -> None:
    """Refuse a table written by a pipeline that computes something else (same columns, other
    metric kinds, fields or window size): merging into it would be silently wrong. ``place``
    says where the table is, for the message (" in 'file.db'", or empty)."""
    meta = q(f"{table}_pipeline")
    if create:
        cur.execute(dialect.sql(f"INSERT INTO {meta} VALUES ('signature', ?) ON CONFLICT DO NOTHING"), (wanted,))
    cur.execute(f"SELECT value FROM {meta} WHERE key = 'signature'")
    row = cur.fetchone()
    if row is not None and row[0] != wanted:
        raise SinkError(
            f"table {table!r}{place} was written by a pipeline that computes {row[0]}, but this one computes "
            f"{wanted}. Use another [sink] table, or drop the old tables ({companions(table)}) to recompute "
            "from the topic"
        )


class SqlSink(ReplayableSink):
    """The SQL sinks' shared behaviour; a database subclasses it with its :attr:`dialect` and
    the hooks marked below. Every public method is one transaction or one read."""

    dialect: ClassVar[Dialect]

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.table = pipeline.sink.table
        self.window_size_ms = pipeline.window.size_ms
        self.tables = tables(pipeline, self.dialect)
        self.keys = primary_keys(pipeline)
        self.columns = [c[0] for c in self.tables[self.table]]
        self.key_cols = self.keys[self.table]
        self._checkpoint_windows: dict[tuple[str, str, int], int] = {}  # last watermark window thinned at
        d, t = self.dialect, q(self.table)
        self._positions = q(f"{self.table}_positions")
        self._rejects = q(f"{self.table}_rejects")
        self._checkpoints = q(f"{self.table}_checkpoints")
        self._replay = q(f"{self.table}_replay")
        self._insert = f"INSERT INTO {t} ({', '.join(map(q, self.columns))})"
        metrics = pipeline.aggregate.metrics
        self.metrics = metrics
        # sketch metrics: (index in the partial, metric); their stored sketches are merged in
        # Python inside the flush transaction (_merge_sketched), their columns then overwritten
        self.sketches = [(i, m) for i, m in enumerate(metrics) if m.kind in SKETCH_KINDS]
        self.sketch_columns = [sketch_column(m) for _, m in self.sketches]
        rules = []
        for m in metrics:
            if m.kind in SKETCH_KINDS:
                rules += [f"{q(c)} = excluded.{q(c)}" for c in (*estimate_columns(m), sketch_column(m))]
            else:
                rules.append(f"{q(m.name)} = " + MERGE_RULES[m.kind].sql.format(
                    a=f"{t}.{q(m.name)}", b=f"excluded.{q(m.name)}", least=d.least, greatest=d.greatest))  # fmt: skip
        self._merge_rules = f"ON CONFLICT ({', '.join(map(q, self.key_cols))}) DO UPDATE SET {', '.join(rules)}"
        self._values = f"VALUES ({', '.join('?' * len(self.columns))})"
        self._upsert = d.sql(f"{self._insert} {self._values} {self._merge_rules}")

    # -- the hooks each database supplies ----------------------------------------------------

    @abstractmethod
    def _transaction(self, what: str, snapshot: bool = False) -> contextlib.AbstractContextManager[Cursor]:
        """A cursor inside one transaction: committed at the end of the block, rolled back if it
        raises; a database error becomes a SinkError naming ``what`` (nothing was written). With
        ``snapshot``, every statement reads the same snapshot."""

    @abstractmethod
    def _read(self, what: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query (``?`` placeholders), or a SinkError naming ``what``."""

    @abstractmethod
    def _existing_columns(self, cur: Cursor, name: str) -> list[tuple[str, str]]:
        """(column, type) of table ``name`` as the catalog has them; empty if it does not exist."""

    @property
    @abstractmethod
    def place(self) -> str:
        """Where the tables are, for messages: " in 'file.db'", or empty."""

    def _merge(self, cur: Cursor, partials: State) -> None:
        """Merge the partials into the aggregates table (a database may do it faster)."""
        cur.executemany(self._upsert, self._rows(partials.items()))

    def _insert_new(self, cur: Cursor, items: list[tuple[Key, Partial]]) -> list[tuple[Key, Partial]]:
        """Insert rows of keys that had no row; return those another transaction inserted
        meanwhile (to merge with). SQLite's write transaction serialises writers: none."""
        cur.executemany(self.dialect.sql(f"{self._insert} {self._values}"), self._rows(items))
        return []

    def _swap_table(self, cur: Cursor, live: str, other: str, parked: str) -> None:
        """Exchange the names of two tables, through ``parked``."""
        for src, dst in ((live, parked), (other, live), (parked, other)):
            cur.execute(f"ALTER TABLE {q(src)} RENAME TO {q(dst)}")

    # -- opening -----------------------------------------------------------------------------

    def _set_up(self, cur: Cursor) -> None:
        """Create the missing tables, refuse tables with other columns or another pipeline's
        signature. Run by the subclass's constructor, in a transaction."""
        for name, columns in self.tables.items():
            found = self._existing_columns(cur, name)
            if not found:
                cur.execute(create_table(name, columns, self.keys[name]))
            elif found != [(c, t) for c, t, _ in columns]:
                raise mismatch(name, found, columns, self.table)
        check_signature(cur, self.dialect, self.table, pipeline_signature(self.pipeline), self.place, create=True)

    # -- the Sink interface ------------------------------------------------------------------

    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        rows = self._read(
            "read of the positions",
            "SELECT p.topic, p.partition, p.next_offset, p.watermark, p.late_events, p.invalid_events, "
            f"r.windows_from, r.until_offset FROM {self._positions} p LEFT JOIN {self._replay} r "
            "ON r.consumer_group = p.consumer_group AND r.topic = p.topic AND r.partition = p.partition "
            "AND r.until_offset > p.next_offset "  # a filter passed is inert
            "WHERE p.consumer_group = ?",
            (group,),
        )
        wanted = set(partitions)
        found = {}
        for topic, partition, offset, watermark, late, invalid, floor, until in rows:
            if (topic, partition) in wanted:
                replay = None if floor is None else ReplayFilter(floor, until)
                found[(topic, partition)] = Position(topic, partition, offset, watermark, late, invalid, replay)
        return found

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        """The flush transaction (docs/design.md, "The flush protocol", step 2)."""
        now_ms = int(time.time() * 1000)
        ordered = sorted(positions, key=lambda w: (w.new.topic, w.new.partition))  # one lock order for all
        with self._transaction("write") as cur:
            conflicts = [
                (w.new.topic, w.new.partition) for w in ordered if not self._set_position(cur, group, w, now_ms)
            ]
            if conflicts:
                raise PositionConflict(conflicts)  # leaving the block rolls the transaction back
            if partials and self.sketches:
                self._merge_sketched(cur, partials)
            elif partials:
                self._merge(cur, partials)
            thinned = self._checkpoint(cur, group, ordered, now_ms) if ordered else {}
            if rejects:
                cur.executemany(
                    self.dialect.sql(
                        f"INSERT INTO {self._rejects} VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (topic, partition, kafka_offset) DO UPDATE SET timestamp_ms = "
                        "excluded.timestamp_ms, key = excluded.key, value = excluded.value, error = excluded.error"
                    ),
                    [(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.error) for r in rejects],
                )
            faults.reach("in_sink_transaction")
        self._checkpoint_windows.update(thinned)  # committed: no need to thin these again in this window

    def _set_position(self, cur: Cursor, group: str, w: PositionWrite, now_ms: int) -> bool:
        """Compare-and-set one position row; False when another worker moved it. Each is one
        statement that reads and writes the row under its lock, so of two workers flushing the
        same partition from the same position exactly one sees rowcount 1."""
        p = w.new
        values = (p.next_offset, p.watermark, p.late_events, p.invalid_events, now_ms)
        if w.expected_offset is None:
            cur.execute(
                self.dialect.sql(
                    f"INSERT INTO {self._positions} VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                (group, p.topic, p.partition, *values),
            )
        else:
            cur.execute(
                self.dialect.sql(
                    f"UPDATE {self._positions} SET next_offset = ?, watermark = ?, late_events = ?, "
                    "invalid_events = ?, updated_at_ms = ? "
                    "WHERE consumer_group = ? AND topic = ? AND partition = ? AND next_offset = ?"
                ),
                (*values, group, p.topic, p.partition, w.expected_offset),
            )
        return bool(cur.rowcount == 1)

    def _rows(self, items: Iterable[tuple[tuple[Any, ...], list[Any]]]) -> Iterator[tuple[Any, ...]]:
        size = self.window_size_ms
        if self.sketches:  # estimates and bytes in place of each sketch
            metrics = self.metrics
            return ((k[0], k[0] + size, *k[1:], *stored_values(metrics, v)) for k, v in items)
        return ((k[0], k[0] + size, *k[1:], *v) for k, v in items)

    def _merge_sketched(self, cur: Cursor, partials: State) -> None:
        """Merge partials holding sketches, inside the flush transaction: read the stored sketches
        of the flushed keys under their row locks, merge each with the partial's in Python, write
        the merged sketches and their estimates (the scalar metrics keep their SQL merge rules).
        The compare-and-set of the positions earlier in the same transaction decides whether any
        of it commits: a doubled flush is refused there, never hidden by the idempotent HLL union.
        Keys without a row are inserted; one that another worker inserted meanwhile is merged in
        the next round. The partials are left as they were (the worker may retry them)."""
        pending = sorted(partials.items())  # one lock order for every worker: no deadlocks
        while pending:
            stored = self._stored_sketches(cur, [key for key, _ in pending])
            old, new = [], []
            for key, values in pending:
                found = stored.get(key)
                if found is None:
                    new.append((key, values))
                    continue
                merged = list(values)
                for (i, m), data in zip(self.sketches, found, strict=True):
                    merged[i] = merge_sketches(m, sketch_from_bytes(m, data), values[i])
                old.append((key, merged))
            if old:
                cur.executemany(self._upsert, self._rows(old))
            pending = self._insert_new(cur, new) if new else []

    def _stored_sketches(self, cur: Cursor, keys: list[Key]) -> dict[Key, tuple[bytes, ...]]:
        """The stored sketches of the rows of ``keys`` that exist, locked (PostgreSQL's FOR
        UPDATE; SQLite's write transaction holds the whole file)."""
        width = len(self.key_cols)
        cols = ", ".join(map(q, [*self.key_cols, *self.sketch_columns]))
        key = ", ".join(map(q, self.key_cols))
        row = "(" + ", ".join("?" * width) + ")"
        found: dict[Key, tuple[bytes, ...]] = {}
        chunk = max(1, SKETCH_READ_PARAMS // width)
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            cur.execute(
                self.dialect.sql(
                    f"SELECT {cols} FROM {q(self.table)} WHERE ({key}) IN (VALUES {', '.join([row] * len(part))}) "
                    f"ORDER BY {key}{self.dialect.lock_rows}"
                ),
                [v for k in part for v in k],
            )
            for r in cur.fetchall():
                found[tuple(r[:width])] = tuple(bytes(b) for b in r[width:])
        return found

    def _checkpoint(
        self, cur: Cursor, group: str, positions: list[PositionWrite], now_ms: int
    ) -> dict[tuple[str, str, int], int]:
        """Keep each new position and each state passed as a checkpoint, the highest offset per
        window of its watermark (a replay rewinds to the last one whose watermark is below the
        replayed windows), drop the replay filters the positions have passed, and thin the old
        checkpoints of partitions whose watermark entered a new window. Returns the
        (group, topic, partition) -> watermark window thinned, for after the commit."""
        best: dict[tuple[str, int, int], Position] = {}
        for w in positions:
            for p in [*w.passed, w.new]:
                key = (p.topic, p.partition, self._watermark_window(p.watermark))
                if key not in best or p.next_offset > best[key].next_offset:
                    best[key] = p
        c = self._checkpoints
        cur.executemany(  # within a window of the watermark the highest offset wins: a replay writing
            # the same states again never moves a checkpoint back
            self.dialect.sql(
                f"INSERT INTO {c} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (consumer_group, topic, partition, watermark_window) DO UPDATE SET "
                "next_offset = excluded.next_offset, watermark = excluded.watermark, late_events = "
                "excluded.late_events, invalid_events = excluded.invalid_events, written_at_ms = "
                f"excluded.written_at_ms WHERE excluded.next_offset > {c}.next_offset"
            ),
            [(group, *key, p.next_offset, p.watermark, p.late_events, p.invalid_events, now_ms)
             for key, p in sorted(best.items())],
        )  # fmt: skip
        cur.executemany(  # a replay filter is done with once the position passed it
            self.dialect.sql(
                f"DELETE FROM {self._replay} WHERE consumer_group = ? AND topic = ? AND partition = ? "
                "AND until_offset <= ?"
            ),
            [(group, w.new.topic, w.new.partition, w.new.next_offset) for w in positions],
        )
        thinned = {}
        for w in positions:
            p = w.new
            partition = (group, p.topic, p.partition)
            wm_window = self._watermark_window(p.watermark)
            if self._checkpoint_windows.get(partition) != wm_window and p.watermark != NO_WATERMARK:
                self._thin_checkpoints(cur, partition, p.watermark - CHECKPOINT_DENSE_MS)
                thinned[partition] = wm_window
        return thinned

    def _watermark_window(self, watermark: int) -> int:
        step = self.pipeline.window.step_ms  # windows start every step (the size, when tumbling)
        return watermark if watermark == NO_WATERMARK else watermark - watermark % step

    def _thin_checkpoints(self, cur: Cursor, key: tuple[str, str, int], cutoff: int) -> None:
        """Below ``cutoff`` (event time), keep only the last checkpoint per CHECKPOINT_SPARSE_MS.
        Runs when a partition's watermark enters a new window, so at most once per flush."""
        c, row = self._checkpoints, self.dialect.row_id
        cur.execute(
            self.dialect.sql(
                f"DELETE FROM {c} WHERE {row} IN (SELECT {row} FROM (SELECT {row}, next_offset, "
                "max(next_offset) OVER (PARTITION BY watermark_window - watermark_window % ?) AS keep "
                f"FROM {c} WHERE consumer_group = ? AND topic = ? AND partition = ? "
                "AND watermark_window < ? AND watermark_window > ?) AS d WHERE next_offset < keep)"
            ),
            (CHECKPOINT_SPARSE_MS, *key, cutoff, NO_WATERMARK),
        )

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every row, without the sketches' bytes (their estimates are columns of their own)."""
        shown = [c for c in self.columns if c not in self.sketch_columns]
        columns, order = ", ".join(map(q, shown)), ", ".join(map(q, self.key_cols))
        rows = self._read("read of the results", f"SELECT {columns} FROM {q(self.table)} ORDER BY {order}")
        return shown, rows

    # -- replay (ReplayableSink) ----------------------------------------------------------------

    def replay_checkpoints(
        self, group: str, watermark_below: int, offset_at_most: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Position]:
        found = {}
        for (topic, partition), most in sorted(offset_at_most.items()):
            rows = self._read(
                "read of the replay checkpoints",
                "SELECT next_offset, watermark, late_events, invalid_events "
                f"FROM {self._checkpoints} WHERE consumer_group = ? AND topic = ? AND partition = ? "
                "AND watermark_window < ? AND watermark < ? AND next_offset <= ? "
                "ORDER BY next_offset DESC LIMIT 1",
                (group, topic, partition, watermark_below, watermark_below, most),
            )
            if rows:
                found[(topic, partition)] = Position(topic, partition, *rows[0])
        return found

    def replay_reset(self, group: str, reset: ReplayReset) -> int:
        now_ms = int(time.time() * 1000)
        sql = self.dialect.sql
        with self._transaction("replay reset") as cur:
            cur.execute(sql(f"DELETE FROM {q(self.table)} WHERE window_start >= ?"), (reset.windows_from,))
            deleted = cur.rowcount
            cur.execute(sql(f"DELETE FROM {self._replay} WHERE consumer_group = ?"), (group,))
            if reset.forget_checkpoints:
                cur.execute(sql(f"DELETE FROM {self._checkpoints} WHERE consumer_group = ?"), (group,))
            positions = sorted(reset.positions, key=lambda p: (p.topic, p.partition))
            if positions:  # unconditionally: no worker may run during a replay's reset
                cur.executemany(
                    sql(
                        f"INSERT INTO {self._positions} VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = "
                        "excluded.next_offset, watermark = excluded.watermark, late_events = "
                        "excluded.late_events, invalid_events = excluded.invalid_events, updated_at_ms = "
                        "excluded.updated_at_ms"
                    ),
                    [(group, p.topic, p.partition, p.next_offset, p.watermark, p.late_events, p.invalid_events,
                      now_ms) for p in positions],
                )  # fmt: skip
            filters = [(group, p.topic, p.partition, p.replay.floor, p.replay.until, now_ms)
                       for p in positions if p.replay is not None]  # fmt: skip
            if filters:
                cur.executemany(sql(f"INSERT INTO {self._replay} VALUES (?, ?, ?, ?, ?, ?)"), filters)
            faults.reach("in_replay_reset")
        self._checkpoint_windows.clear()
        return int(deleted)

    def replay_windows(self, windows_from: int) -> tuple[int, int]:
        ((windows, rows),) = self._read(
            "count of the windows",
            f"SELECT count(DISTINCT window_start), count(*) FROM {q(self.table)} WHERE window_start >= ?",
            (windows_from,),
        )
        return int(windows), int(rows)

    def replay_tables(self) -> list[str]:
        return [self.table + suffix for suffix in TABLE_SUFFIXES]

    def replay_table_exists(self, table: str) -> bool:
        with self._transaction(f"look-up of table {table!r}") as cur:
            return bool(self._existing_columns(cur, table))

    def replay_clone(self, table: str, group: str, to_group: str, windows_below: int) -> None:
        src = self.table
        sql = self.dialect.sql
        # one snapshot for every statement: rows and positions of the same flushes, although the
        # live fleet may keep committing meanwhile
        with self._transaction(f"clone of {src!r} into {table!r}", snapshot=True) as cur:
            for suffix in ("", *GROUP_TABLES):
                cur.execute(f"SELECT EXISTS (SELECT 1 FROM {q(table + suffix)})")
                if (cur.fetchone() or (False,))[0]:
                    raise SinkError(f"cannot clone {src!r} into {table!r}: {table + suffix} is not empty")
            cols = ", ".join(map(q, self.columns))
            cur.execute(
                sql(f"INSERT INTO {q(table)} ({cols}) SELECT {cols} FROM {q(src)} WHERE window_start < ?"),
                (windows_below,),
            )
            for suffix in GROUP_TABLES:
                names = [c[0] for c in self.tables[src + suffix]]
                picked = ", ".join("?" if c == "consumer_group" else q(c) for c in names)
                cur.execute(
                    sql(
                        f"INSERT INTO {q(table + suffix)} ({', '.join(map(q, names))}) SELECT {picked} "
                        f"FROM {q(src + suffix)} WHERE consumer_group = ?"
                    ),
                    (to_group, group),
                )
            cols = ", ".join(q(c[0]) for c in self.tables[src + "_rejects"])
            cur.execute(
                f"INSERT INTO {q(table + '_rejects')} ({cols}) SELECT {cols} FROM {q(src + '_rejects')} "
                "WHERE true ON CONFLICT DO NOTHING"  # WHERE: SQLite would read ON as a join's"
            )

    def replay_swap(self, table: str, group: str, other_group: str) -> None:
        live = self.table
        parked_group = f"eventfleet.swap.{os.getpid()}.{time.time_ns()}"  # no real group's rows collide
        with self._transaction(f"swap of {live!r} and {table!r}") as cur:
            for suffix in TABLE_SUFFIXES:
                self._swap_table(cur, live + suffix, table + suffix, SWAP_PARKED + suffix)
            for name in (live, table):
                for suffix in GROUP_TABLES:
                    # three steps: a unique key is checked row by row, so one UPDATE exchanging
                    # the groups would collide where both have a row for the same partition
                    for src, dst in ((group, parked_group), (other_group, group), (parked_group, other_group)):
                        cur.execute(
                            self.dialect.sql(
                                f"UPDATE {q(name + suffix)} SET consumer_group = ? WHERE consumer_group = ?"
                            ),
                            (dst, src),
                        )
        self._checkpoint_windows.clear()
