"""The embedded default sink: one SQLite file, shared safely by the workers of one machine.

The tables and the flush transaction are :class:`~consumer.sinks.sql.SqlSink`'s; this is the
dialect. WAL mode lets readers see results while workers write; ``BEGIN IMMEDIATE`` serialises
writers (and is the snapshot a replay's clone needs); ``synchronous=FULL`` makes a committed
flush survive power loss.
"""

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Pipeline, SinkSettings, _identifier, _string
from ..errors import ConfigError, SinkError
from .base import SinkType
from .sql import BYTES, INT32, INT64, Cursor, Dialect, SqlSink, q

SQLITE = Dialect(
    name="SQLite",
    types={"long": "INTEGER", "int": "INTEGER", "boolean": "INTEGER", "float": "REAL", "double": "REAL",
           "bytes": "BLOB", INT32: "INTEGER", INT64: "INTEGER", BYTES: "BLOB"},
    text="TEXT",
    least="min",
    greatest="max",
    percent_placeholders=False,
    row_id="rowid",
    lock_rows="",  # BEGIN IMMEDIATE: the writer holds the file
)  # fmt: skip
BUSY_TIMEOUT_S = 5.0  # a database locked longer is a sink failure: the worker pauses and retries


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


class SqliteSink(SqlSink):
    dialect = SQLITE

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(pipeline)
        if pipeline.sink.path is None:
            raise SinkError("the sqlite sink needs [sink] path")
        self.path = pipeline.sink.path
        try:
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            _use_wal(self.db)
            self.db.execute("PRAGMA synchronous=FULL")  # a committed flush survives power loss
        except sqlite3.Error as e:
            raise SinkError(f"cannot open SQLite sink {str(self.path)!r}: {e}") from e
        with self._transaction("set-up of the tables") as cur:
            self._set_up(cur)

    @property
    def place(self) -> str:
        return f" in {str(self.path)!r}"

    @contextlib.contextmanager
    def _transaction(self, what: str, snapshot: bool = False) -> Iterator[Cursor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (a snapshot already: writers wait for it)."""
        db = self.db
        try:
            cur = db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise SinkError(f"SQLite {what}{self.place} failed: {e}") from e

    def _read(self, what: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:  # locked past the busy timeout, unreadable: the worker retries
            return self.db.execute(query, params).fetchall()
        except sqlite3.Error as e:
            raise SinkError(f"SQLite {what}{self.place} failed: {e}") from e

    def _existing_columns(self, cur: Cursor, name: str) -> list[tuple[str, str]]:
        cur.execute(f"PRAGMA table_info({q(name)})")
        return [(row[1], row[2]) for row in cur.fetchall()]

    def close(self) -> None:
        self.db.close()


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


def parse_settings(t: Mapping[str, Any], base: Path) -> SinkSettings:
    """``[sink] type = "sqlite"``: ``path`` (relative to the pipeline file) and ``table``."""
    table = _identifier("sink.table", t.get("table"))
    path = base / _string(t, "sink.path", "path")
    if not path.parent.is_dir():
        raise ConfigError(
            "sink.path",
            f"folder {str(path.parent)!r} does not exist",
            "create it or point sink.path elsewhere",
        )
    return SinkSettings("sqlite", path, table)


SINK = SinkType(keys=("type", "path", "table"), parse=parse_settings, open=SqliteSink, check=check)
