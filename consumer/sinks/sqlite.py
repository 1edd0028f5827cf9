"""The embedded default sink: one SQLite file, shared safely by the workers of one machine.

Tables: ``<table>`` (the aggregates), ``<table>_positions`` (per group/topic/partition: next
offset, watermark, late and invalid counts), ``<table>_rejects`` (undecodable messages),
``<table>_pipeline`` (what the table computes), and for replay ``<table>_checkpoints`` (past
positions, one per window of the watermark) and ``<table>_replay`` (the filters of a replay).
WAL mode lets readers see results while workers write; ``BEGIN IMMEDIATE`` serialises writers.
"""

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from .. import faults
from ..aggregate import State
from ..config import Pipeline
from ..errors import PositionConflict, SinkError
from ..types import Position, PositionWrite, Reject, ReplayFilter, ReplayReset, TopicPartition
from ..window import NO_WATERMARK
from .base import ReplayableSink

_SQL_TYPES = {
    "long": "INTEGER",
    "int": "INTEGER",
    "boolean": "INTEGER",
    "float": "REAL",
    "double": "REAL",
}
BUSY_TIMEOUT_S = 5.0  # a database locked longer is a sink failure: the worker pauses and retries
TABLE_SUFFIXES = ("", "_positions", "_rejects", "_pipeline", "_checkpoints", "_replay")
# Checkpoints: one per window of the watermark (lossless for window-aligned replays); those more
# than CHECKPOINT_DENSE_MS of event time behind a partition's watermark are thinned to one per
# CHECKPOINT_SPARSE_MS. Any subset of checkpoints is still exact: a replay may just rewind further.
CHECKPOINT_DENSE_MS = 7 * 24 * 3_600_000
CHECKPOINT_SPARSE_MS = 3_600_000


def pipeline_signature(pipeline: Pipeline) -> str:
    """What the aggregates table means: window size, grouping and each metric's rule."""
    return json.dumps(
        {
            "window_ms": pipeline.window.size_ms,
            "group_by": list(pipeline.aggregate.group_by),
            "metrics": {m.name: f"{m.kind}:{m.field}" if m.field else m.kind for m in pipeline.aggregate.metrics},
        },
        sort_keys=True,
    )


def _q(name: str) -> str:
    return f'"{name}"'


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL mode. When another connection switches the same new file at the
    same moment (the workers of a fleet starting together), SQLite answers "database is locked"
    at once, without waiting for the busy timeout: retry within the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteSink(ReplayableSink):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.table = pipeline.sink.table
        self.window_size_ms = pipeline.window.size_ms
        columns = pipeline.column_types()
        self.columns = list(columns)
        key_cols = ["window_start", *pipeline.aggregate.group_by]
        if pipeline.sink.path is None:
            raise SinkError("the sqlite sink needs [sink] path")
        try:
            self.db = sqlite3.connect(pipeline.sink.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            _use_wal(self.db)
            self.db.execute("PRAGMA synchronous=FULL")  # a committed flush survives power loss
            self._create(columns, key_cols)
        except sqlite3.Error as e:
            raise SinkError(f"cannot open SQLite sink {str(pipeline.sink.path)!r}: {e}") from e
        merge = []
        for m in pipeline.aggregate.metrics:
            c = _q(m.name)
            if m.kind in ("count", "sum"):
                merge.append(f"{c} = {c} + excluded.{c}")
            else:
                merge.append(f"{c} = {m.kind}({c}, excluded.{c})")
        self._upsert = (
            f"INSERT INTO {_q(self.table)} ({', '.join(map(_q, self.columns))}) "
            f"VALUES ({', '.join('?' * len(self.columns))}) "
            f"ON CONFLICT ({', '.join(map(_q, key_cols))}) DO UPDATE SET {', '.join(merge)}"
        )
        self._positions = _q(f"{self.table}_positions")
        self._rejects = _q(f"{self.table}_rejects")
        self._checkpoints = _q(f"{self.table}_checkpoints")
        self._replay = _q(f"{self.table}_replay")
        self._checkpoint_windows: dict[tuple[str, str, int], int] = {}  # last watermark window written

    def _create(self, columns: dict[str, str], key_cols: list[str]) -> None:
        defs = [f"{_q(c)} {_SQL_TYPES.get(t, 'TEXT')} NOT NULL" for c, t in columns.items()]
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table)} ({', '.join(defs)}, "
            f"PRIMARY KEY ({', '.join(map(_q, key_cols))}))"
        )
        found = [row[1] for row in self.db.execute(f"PRAGMA table_info({_q(self.table)})")]
        if found != list(columns):
            raise SinkError(
                f"table {self.table!r} in {str(self.pipeline.sink.path)!r} has columns {found}, "
                f"but the pipeline writes {list(columns)}. Use another [sink] table, or drop the "
                "old table (and its _positions table) to recompute it"
            )
        self._check_signature()
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table + '_positions')} ("
            "consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, "
            "next_offset INTEGER NOT NULL, watermark INTEGER NOT NULL, "
            "late_events INTEGER NOT NULL, invalid_events INTEGER NOT NULL, "
            "updated_at_ms INTEGER NOT NULL, PRIMARY KEY (consumer_group, topic, partition))"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table + '_rejects')} ("
            "topic TEXT NOT NULL, partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL, "
            "timestamp_ms INTEGER NOT NULL, key BLOB, value BLOB, error TEXT NOT NULL, "
            "PRIMARY KEY (topic, partition, kafka_offset))"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table + '_checkpoints')} ("
            "consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, "
            "watermark_window INTEGER NOT NULL, next_offset INTEGER NOT NULL, watermark INTEGER NOT NULL, "
            "late_events INTEGER NOT NULL, invalid_events INTEGER NOT NULL, written_at_ms INTEGER NOT NULL, "
            "PRIMARY KEY (consumer_group, topic, partition, watermark_window))"
        )
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.table + '_replay')} ("
            "consumer_group TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, "
            "windows_from INTEGER NOT NULL, until_offset INTEGER NOT NULL, started_at_ms INTEGER NOT NULL, "
            "PRIMARY KEY (consumer_group, topic, partition))"
        )

    def _check_signature(self) -> None:
        """Refuse a table written by a pipeline that computes something else (same columns,
        other metric kinds, fields or window size): merging into it would be silently wrong."""
        meta = _q(self.table + "_pipeline")
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        wanted = pipeline_signature(self.pipeline)
        self.db.execute(f"INSERT OR IGNORE INTO {meta} VALUES ('signature', ?)", (wanted,))
        (stored,) = self.db.execute(f"SELECT value FROM {meta} WHERE key = 'signature'").fetchone()
        if stored != wanted:
            raise SinkError(
                f"table {self.table!r} in {str(self.pipeline.sink.path)!r} was written by a pipeline that "
                f"computes {stored}, but this one computes {wanted}. Use another [sink] table, or drop the "
                f"old tables ({self.table}, {self.table}_positions, {self.table}_rejects, {self.table}_pipeline) "
                "to recompute from the topic"
            )

    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        wanted = set(partitions)
        try:
            rows = self.db.execute(
                "SELECT p.topic, p.partition, p.next_offset, p.watermark, p.late_events, p.invalid_events, "
                f"r.windows_from, r.until_offset FROM {self._positions} p LEFT JOIN {self._replay} r "
                "ON r.consumer_group = p.consumer_group AND r.topic = p.topic AND r.partition = p.partition "
                "AND r.until_offset > p.next_offset WHERE p.consumer_group = ?",  # a filter passed is inert
                (group,),
            ).fetchall()
        except sqlite3.Error as e:  # locked past the busy timeout, unreadable: the worker retries
            raise SinkError(f"SQLite read of the positions in {str(self.pipeline.sink.path)!r} failed: {e}") from e
        found = {}
        for topic, partition, offset, watermark, late, invalid, floor, until in rows:
            if (topic, partition) in wanted:
                replay = None if floor is None else ReplayFilter(floor, until)
                found[(topic, partition)] = Position(topic, partition, offset, watermark, late, invalid, replay)
        return found

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        now_ms = int(time.time() * 1000)
        size = self.window_size_ms
        db = self.db
        with self._transaction(f"write to {str(self.pipeline.sink.path)!r}"):
            conflicts = [(w.new.topic, w.new.partition) for w in positions if not self._set_position(group, w, now_ms)]
            if conflicts:
                raise PositionConflict(conflicts)  # rolls the transaction back
            db.executemany(self._upsert, ((k[0], k[0] + size, *k[1:], *v) for k, v in partials.items()))
            self._checkpoint(group, positions, now_ms)
            db.executemany(
                f"INSERT OR REPLACE INTO {self._rejects} VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.error) for r in rejects),
            )
            faults.reach("in_sink_transaction")

    def _set_position(self, group: str, w: PositionWrite, now_ms: int) -> bool:
        """Compare-and-set one position row; False when another worker moved it."""
        p = w.new
        values = (p.next_offset, p.watermark, p.late_events, p.invalid_events, now_ms)
        if w.expected_offset is None:
            cur = self.db.execute(
                f"INSERT OR IGNORE INTO {self._positions} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (group, p.topic, p.partition, *values),
            )
        else:
            cur = self.db.execute(
                f"UPDATE {self._positions} SET next_offset = ?, watermark = ?, late_events = ?, "
                "invalid_events = ?, updated_at_ms = ? "
                "WHERE consumer_group = ? AND topic = ? AND partition = ? AND next_offset = ?",
                (*values, group, p.topic, p.partition, w.expected_offset),
            )
        return cur.rowcount == 1

    def _checkpoint(self, group: str, positions: list[PositionWrite], now_ms: int) -> None:
        """Keep each new position as a checkpoint, the highest offset per window of its watermark
        (a replay rewinds to the last one whose watermark is below the replayed windows), and drop
        the replay filters the positions have passed."""
        for w in positions:
            for p in [*w.passed, w.new]:
                self._keep_checkpoint(group, p, now_ms)
            p = w.new
            self.db.execute(  # a replay filter is done with once the position passed it
                f"DELETE FROM {self._replay} WHERE consumer_group = ? AND topic = ? AND partition = ? "
                "AND until_offset <= ?",
                (group, p.topic, p.partition, p.next_offset),
            )
            key = (group, p.topic, p.partition)
            wm_window = self._watermark_window(p.watermark)
            if self._checkpoint_windows.get(key) != wm_window and p.watermark != NO_WATERMARK:
                self._checkpoint_windows[key] = wm_window
                self._thin_checkpoints(key, p.watermark - CHECKPOINT_DENSE_MS)

    def _watermark_window(self, watermark: int) -> int:
        return watermark if watermark == NO_WATERMARK else watermark - watermark % self.window_size_ms

    def _keep_checkpoint(self, group: str, p: Position, now_ms: int) -> None:
        """Upsert one checkpoint; within a window of the watermark the highest offset wins (a
        replay writing the same states again never moves one back)."""
        wm_window = self._watermark_window(p.watermark)
        self.db.execute(
            f"INSERT INTO {self._checkpoints} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (consumer_group, topic, partition, watermark_window) DO UPDATE SET "
            "next_offset = excluded.next_offset, watermark = excluded.watermark, late_events = "
            "excluded.late_events, invalid_events = excluded.invalid_events, written_at_ms = "
            "excluded.written_at_ms WHERE excluded.next_offset > next_offset",
            (group, p.topic, p.partition, wm_window, p.next_offset, p.watermark, p.late_events, p.invalid_events,
             now_ms),
        )  # fmt: skip

    def _thin_checkpoints(self, key: tuple[str, str, int], cutoff: int) -> None:
        """Below ``cutoff`` (event time), keep only the last checkpoint per CHECKPOINT_SPARSE_MS.
        Runs when a partition's watermark enters a new window, so at most once per flush."""
        self.db.execute(
            f"DELETE FROM {self._checkpoints} WHERE rowid IN (SELECT rowid FROM (SELECT rowid, next_offset, "
            "max(next_offset) OVER (PARTITION BY watermark_window - watermark_window % ?) AS keep "
            f"FROM {self._checkpoints} WHERE consumer_group = ? AND topic = ? AND partition = ? "
            "AND watermark_window < ? AND watermark_window > ?) WHERE next_offset < keep)",
            (CHECKPOINT_SPARSE_MS, *key, cutoff, NO_WATERMARK),
        )

    # -- replay (ReplayableSink) ----------------------------------------------------------------

    def replay_checkpoints(
        self, group: str, watermark_below: int, offset_at_most: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Position]:
        found = {}
        for (topic, partition), most in offset_at_most.items():
            row = self.db.execute(
                "SELECT next_offset, watermark, late_events, invalid_events "
                f"FROM {self._checkpoints} WHERE consumer_group = ? AND topic = ? AND partition = ? "
                "AND watermark_window < ? AND watermark < ? AND next_offset <= ? "
                "ORDER BY next_offset DESC LIMIT 1",
                (group, topic, partition, watermark_below, watermark_below, most),
            ).fetchone()
            if row is not None:
                found[(topic, partition)] = Position(topic, partition, *row)
        return found

    def replay_reset(self, group: str, reset: ReplayReset) -> int:
        now_ms = int(time.time() * 1000)
        db = self.db
        with self._transaction(f"replay reset of {str(self.pipeline.sink.path)!r}"):
            deleted = db.execute(
                f"DELETE FROM {_q(self.table)} WHERE window_start >= ?", (reset.windows_from,)
            ).rowcount
            db.execute(f"DELETE FROM {self._replay} WHERE consumer_group = ?", (group,))
            if reset.forget_checkpoints:
                db.execute(f"DELETE FROM {self._checkpoints} WHERE consumer_group = ?", (group,))
            for p in reset.positions:
                db.execute(
                    f"INSERT OR REPLACE INTO {self._positions} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (group, p.topic, p.partition, p.next_offset, p.watermark, p.late_events,
                     p.invalid_events, now_ms),
                )  # fmt: skip
                if p.replay is not None:
                    db.execute(
                        f"INSERT INTO {self._replay} VALUES (?, ?, ?, ?, ?, ?)",
                        (group, p.topic, p.partition, p.replay.floor, p.replay.until, now_ms),
                    )
            faults.reach("in_replay_reset")
        self._checkpoint_windows.clear()
        return int(deleted)

    def replay_windows(self, windows_from: int) -> tuple[int, int]:
        windows, rows = self.db.execute(
            f"SELECT count(DISTINCT window_start), count(*) FROM {_q(self.table)} WHERE window_start >= ?",
            (windows_from,),
        ).fetchone()
        return int(windows), int(rows)

    def replay_tables(self) -> list[str]:
        return [self.table + suffix for suffix in TABLE_SUFFIXES]

    def replay_table_exists(self, table: str) -> bool:
        found = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return found.fetchone() is not None

    def replay_clone(self, table: str, group: str, to_group: str, windows_below: int) -> None:
        db = self.db
        src = self.table
        # one snapshot: rows and positions of the same flushes
        with self._transaction(f"clone of {src!r} into {table!r}"):
            for suffix in ("", "_positions", "_checkpoints", "_replay"):
                (n,) = db.execute(f"SELECT count(*) FROM {_q(table + suffix)}").fetchone()
                if n:
                    raise SinkError(f"cannot clone {src!r} into {table!r}: {table + suffix} is not empty")
            db.execute(f"INSERT INTO {_q(table)} SELECT * FROM {_q(src)} WHERE window_start < ?", (windows_below,))
            for suffix in ("_positions", "_checkpoints", "_replay"):
                columns = [r[1] for r in db.execute(f"PRAGMA table_info({_q(src + suffix)})")]
                picked = ", ".join("?" if c == "consumer_group" else _q(c) for c in columns)
                db.execute(
                    f"INSERT INTO {_q(table + suffix)} SELECT {picked} FROM {_q(src + suffix)} "
                    "WHERE consumer_group = ?",
                    (to_group, group),
                )
            db.execute(f"INSERT OR IGNORE INTO {_q(table + '_rejects')} SELECT * FROM {_q(src + '_rejects')}")

    def replay_swap(self, table: str, group: str, other_group: str) -> None:
        db = self.db
        live = self.table
        parked = f"eventfleet_swap_{live}"
        with self._transaction(f"swap of {live!r} and {table!r}"):
            for suffix in TABLE_SUFFIXES:
                db.execute(f"ALTER TABLE {_q(live + suffix)} RENAME TO {_q(parked + suffix)}")
                db.execute(f"ALTER TABLE {_q(table + suffix)} RENAME TO {_q(live + suffix)}")
                db.execute(f"ALTER TABLE {_q(parked + suffix)} RENAME TO {_q(table + suffix)}")
            parked_group = f"eventfleet.swap.{os.getpid()}.{time.time_ns()}"  # no real group's rows collide
            for name in (live, table):
                for suffix in ("_positions", "_checkpoints", "_replay"):
                    # three steps: the primary key is checked row by row, so one UPDATE exchanging
                    # the groups would collide where both have a row for the same partition
                    for src, dst in ((group, parked_group), (other_group, group), (parked_group, other_group)):
                        db.execute(
                            f"UPDATE {_q(name + suffix)} SET consumer_group = ? WHERE consumer_group = ?",
                            (dst, src),
                        )
        self._checkpoint_windows.clear()

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        order = ", ".join(map(_q, ["window_start", *self.pipeline.aggregate.group_by]))
        rows = self.db.execute(f"SELECT * FROM {_q(self.table)} ORDER BY {order}").fetchall()
        return self.columns, rows

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: an exception inside rolls everything back, and an
        SQLite error becomes a SinkError naming ``what`` (nothing was written)."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise SinkError(f"SQLite {what} failed: {e}") from e

    def close(self) -> None:
        self.db.close()


def open_sink(pipeline: Pipeline) -> SqliteSink:
    return SqliteSink(pipeline)


def check(pipeline: Pipeline) -> list[str]:
    """For ``check-config``: the database file can be created or written (and its folder too:
    WAL mode keeps -wal and -shm files beside it)."""
    path = pipeline.sink.path
    if path is None:
        raise SinkError("the sqlite sink needs [sink] path")
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SinkError(
            f"cannot write to folder {str(folder)!r} of the SQLite sink {str(path)!r}. Fix: make it writable "
            "for this user, or point sink.path elsewhere"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise SinkError(f"cannot read and write the SQLite sink {str(path)!r}. Fix: make it writable for this user")
    return [f"SQLite file {str(path)!r} ({'exists' if path.exists() else 'will be created'}), folder writable"]
