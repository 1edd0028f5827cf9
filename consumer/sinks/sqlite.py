"""The embedded default sink: one SQLite file, shared safely by the workers of one machine.

Tables: ``<table>`` (the aggregates), ``<table>_positions`` (per group/topic/partition: next
offset, watermark, late and invalid counts) and ``<table>_rejects`` (undecodable messages).
WAL mode lets readers see results while workers write; ``BEGIN IMMEDIATE`` serialises writers.
"""

import json
import os
import sqlite3
import time
from typing import Any

from .. import faults
from ..aggregate import State
from ..config import Pipeline
from ..errors import PositionConflict, SinkError
from . import Position, PositionWrite, Reject, TopicPartition

_SQL_TYPES = {
    "long": "INTEGER",
    "int": "INTEGER",
    "boolean": "INTEGER",
    "float": "REAL",
    "double": "REAL",
}
BUSY_TIMEOUT_S = 5.0  # a database locked longer is a sink failure: the worker pauses and retries


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


class SqliteSink:
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
            self.db.execute("PRAGMA journal_mode=WAL")
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
        rows = self.db.execute(
            "SELECT topic, partition, next_offset, watermark, late_events, invalid_events "
            f"FROM {self._positions} WHERE consumer_group = ?",
            (group,),
        )
        return {(r[0], r[1]): Position(*r) for r in rows if (r[0], r[1]) in wanted}

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        now_ms = int(time.time() * 1000)
        size = self.window_size_ms
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                conflicts = [
                    (w.new.topic, w.new.partition) for w in positions if not self._set_position(group, w, now_ms)
                ]
                if conflicts:
                    db.execute("ROLLBACK")
                    raise PositionConflict(conflicts)
                db.executemany(self._upsert, ((k[0], k[0] + size, *k[1:], *v) for k, v in partials.items()))
                db.executemany(
                    f"INSERT OR REPLACE INTO {self._rejects} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.error) for r in rejects),
                )
                faults.reach("in_sink_transaction")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise SinkError(f"SQLite write to {str(self.pipeline.sink.path)!r} failed: {e}") from e

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

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        order = ", ".join(map(_q, ["window_start", *self.pipeline.aggregate.group_by]))
        rows = self.db.execute(f"SELECT * FROM {_q(self.table)} ORDER BY {order}").fetchall()
        return self.columns, rows

    def close(self) -> None:
        self.db.close()


def check(pipeline: Pipeline) -> str:
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
    return f"SQLite file {str(path)!r} ({'exists' if path.exists() else 'will be created'}), folder writable"
