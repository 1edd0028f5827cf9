"""The shared sink: PostgreSQL, for fleets spread over several machines.

The same tables, the same flush transaction and the same replay as the SQLite sink, written once
in :class:`~consumer.sinks.sql.SqlSink`; this is the dialect (types, LEAST/GREATEST, %s
placeholders), the connection and its failures, and a faster merge (binary COPY).

Isolation: READ COMMITTED (the server's default) is enough, and is what we use. Every check this
transaction depends on is a single-row statement that reads and writes under the row's lock:
``UPDATE ... WHERE next_offset = expected`` waits for a concurrent writer of the same row and
then re-checks its WHERE against the committed row, so of two workers flushing the same
partition from the same position exactly one updates a row (rowcount 1) and the other sees
rowcount 0 and rolls back; ``INSERT ... ON CONFLICT DO NOTHING`` does the same for a first
position. The aggregate merges (``a + excluded.a``, LEAST, GREATEST) are applied to the latest
committed row under its lock, and commute, so concurrent transactions never lose each other's
merges. SERIALIZABLE would add
serialization failures without preventing anything more. Rows are written in key order so that
two workers merging the same keys lock them in the same order and do not deadlock.

Failures: any error from the server or the connection (down, restarted, connection lost,
deadlock, serialization failure, a row lock held past LOCK_TIMEOUT_S by a frozen worker) becomes
a :class:`~consumer.errors.SinkError`: the transaction did not commit, the connection is dropped
and the next call reconnects, and the worker retries the same flush with backoff. A connection
lost during COMMIT leaves the outcome unknown: if it did commit, the retry finds the position
already moved and its compare-and-set fails, so the worker rewinds to the stored position
instead of merging twice.

Replay (docs/replay.md) has two points of PostgreSQL's own. The clone
for ``--into`` copies rows, positions, filters, checkpoints and rejects in several statements
while the live fleet keeps writing: it runs at REPEATABLE READ, so that every statement reads the
same snapshot (at READ COMMITTED, a flush committing between two of them would pair rows of one
flush with positions of another). The swap renames the six tables (and their primary-key
constraints) with ``ALTER TABLE ... RENAME`` and exchanges the two groups' rows, all in one
transaction: other sessions see the old tables or the new ones, never a mix.

Until the first flushes of tables created before replay existed write checkpoints, a replay from
a time restarts from the earliest offset (exact while the topic still holds offset 0; otherwise
the replay is refused with the fix).
"""

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from ..aggregate import SKETCH_KINDS, Key, Partial, State, estimate_columns, sketch_column
from ..config import Pipeline, SinkSettings, _identifier, _string
from ..errors import ConfigError, SinkError
from ..types import PositionWrite, Reject
from .base import SinkType
from .sql import (
    BYTES,
    INT32,
    INT64,
    Cursor,
    Dialect,
    SqlSink,
    check_signature,
    mismatch,
    pipeline_signature,
    q,
    tables,
)

# Avro type -> column type. 64-bit integers throughout: counts, sums of int/long fields, offsets
# and times never overflow on realistic data (a sum of 5,000,000 per event reaches 2^63 after
# 1.8 trillion events in one window and key); an overflow would be an error, never a wrap.
POSTGRES = Dialect(
    name="PostgreSQL",
    types={"long": "bigint", "int": "bigint", "boolean": "boolean", "float": "double precision",
           "double": "double precision", "bytes": "bytea", INT32: "integer", INT64: "bigint", BYTES: "bytea"},
    text="text",
    least="LEAST",
    greatest="GREATEST",
    percent_placeholders=True,
    row_id="ctid",
    lock_rows=" FOR UPDATE",
)  # fmt: skip
NAME_BYTES = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)
LONGEST_SUFFIX = "_checkpoints"  # the longest suffix of the sink's companion tables
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = 10.0  # a row held longer by another session (a frozen zombie) fails the write: pause, retry
IDLE_IN_TRANSACTION_TIMEOUT_S = 60  # the server ends our session if we freeze inside a transaction
STRATEGIES = ("copy", "unnest", "executemany")
"""How partials are merged; the first is the default. bench/pg_write.py measures them: binary
COPY into a temporary table plus one INSERT ... SELECT is 1.5 to 2.3 times as fast as
executemany (which psycopg pipelines) from 1,000 to 100,000 rows per flush; unnest in between."""
STAGE = q("eventfleet_stage")  # the COPY strategy's temporary table: one per connection


class PostgresSink(SqlSink):
    dialect = POSTGRES

    def __init__(self, pipeline: Pipeline, strategy: str = STRATEGIES[0]) -> None:
        super().__init__(pipeline)
        self.dsn = pipeline.sink.dsn or ""  # empty: libpq reads the PG* environment variables
        self.strategy = strategy
        self.types = [c[1] for c in self.tables[self.table]]
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._staged = False  # the COPY strategy's temporary table exists on this connection
        self._address = describe_target(self.dsn)  # for messages: host:port of the last connection
        cols, key = ", ".join(map(q, self.columns)), ", ".join(map(q, self.key_cols))
        unnest = ", ".join(f"%s::{ty}[]" for ty in self.types)
        self._upsert_unnest = (
            f"{self._insert} SELECT * FROM unnest({unnest}) AS u ({cols}) ORDER BY {key} {self._merge_rules}"
        )
        self._upsert_staged = f"{self._insert} SELECT {cols} FROM {STAGE} ORDER BY {key} {self._merge_rules}"
        self._copy = f"COPY {STAGE} ({cols}) FROM STDIN (FORMAT BINARY)"
        try:
            with self._transaction("set-up of the tables") as cur:
                # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.table),))
                self._set_up(cur)
        except SinkError:
            self.close()
            raise

    # -- the connection ----------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The open connection, or a new one (after a failure dropped the old one)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn)
            self._staged = False
            self._address = _where(self._conn)
        return self._conn

    def _failed(self, what: str, e: psycopg.Error) -> SinkError:
        """Drop the connection (the next call reconnects) and describe the failure."""
        self.close()
        return SinkError(f"PostgreSQL {what} at {self._address} failed: {_first_line(e)}")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    # -- the hooks of SqlSink ----------------------------------------------------------------

    @property
    def place(self) -> str:
        return ""

    @contextlib.contextmanager
    def _transaction(self, what: str, snapshot: bool = False) -> Iterator[Cursor]:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if snapshot:  # every statement reads one snapshot although other sessions commit
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield cur
        except psycopg.Error as e:
            raise self._failed(what, e) from e

    def _read(self, what: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):  # a read is safe to repeat: once more on a fresh connection
            try:
                return self._connection().execute(POSTGRES.sql(query), params).fetchall()
            except psycopg.Error as e:
                error = self._failed(what, e)
                if attempt == 2:
                    raise error from e
        raise AssertionError("unreachable")

    def _existing_columns(self, cur: Cursor, name: str) -> list[tuple[str, str]]:
        return _existing_columns(cur, name)

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        conn = self._connection()  # first: a new connection has no temporary table yet
        if self.strategy == "copy" and not self._staged:  # once per connection, outside the transaction
            try:
                conn.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} (LIKE {q(self.table)} INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS"
                )
            except psycopg.Error as e:
                raise self._failed("write", e) from e
            self._staged = True
        super().write(group, partials, positions, rejects)

    def _merge(self, cur: Cursor, partials: State) -> None:
        """Merge the partials in key order (no deadlocks between workers merging the same keys)."""
        rows = list(self._rows(sorted(partials.items())))
        if self.strategy == "unnest":  # one statement, one array parameter per column
            cur.execute(self._upsert_unnest, [list(c) for c in zip(*rows, strict=True)])
        elif self.strategy == "copy":  # binary COPY into the temporary table, then one upsert
            with cur.copy(self._copy) as copy:
                copy.set_types(self.types)
                for row in rows:
                    copy.write_row(row)
            cur.execute(self._upsert_staged)
        else:  # one INSERT per row, sent back to back (psycopg pipelines executemany)
            cur.executemany(self._upsert, rows)

    def _insert_new(self, cur: Cursor, items: list[tuple[Key, Partial]]) -> list[tuple[Key, Partial]]:
        """Insert the rows of keys that had none; a key another worker inserted since our read
        (its transaction committed while we waited on its row) is returned, to merge with."""
        keys = ", ".join(map(q, self.key_cols))
        cur.executemany(
            POSTGRES.sql(f"{self._insert} {self._values} ON CONFLICT DO NOTHING RETURNING {keys}"),
            self._rows(items),
            returning=True,
        )
        inserted: set[Key] = set()
        while True:
            inserted.update(tuple(r) for r in cur.fetchall())
            if not cur.nextset():
                break
        return [(key, values) for key, values in items if key not in inserted]

    def _swap_table(self, cur: Cursor, live: str, other: str, parked: str) -> None:
        """Rename the tables, then their primary keys: a key's name follows its table (a new
        table's <name>_pkey stays free), exchanged through a parked name in the same three steps."""
        keys = [_primary_key_name(cur, n) for n in (live, other)]
        super()._swap_table(cur, live, other, parked)
        if None not in keys:
            ours, theirs = (q(k) for k in keys if k is not None)
            spare = q(parked + "_pkey")
            cur.execute(f"ALTER TABLE {q(live)} RENAME CONSTRAINT {theirs} TO {spare}")  # live is the other's now
            cur.execute(f"ALTER TABLE {q(other)} RENAME CONSTRAINT {ours} TO {theirs}")
            cur.execute(f"ALTER TABLE {q(live)} RENAME CONSTRAINT {spare} TO {ours}")


# -- connecting ----------------------------------------------------------------------------------


def connect(dsn: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection (writes open their own transaction), with a connect timeout and
    TCP keepalives unless the DSN or the environment says otherwise. Errors name the server."""
    given = conninfo.conninfo_to_dict(dsn)
    defaults: dict[str, Any] = {"keepalives_idle": 15, "keepalives_interval": 5, "keepalives_count": 3}
    if "PGCONNECT_TIMEOUT" not in os.environ:
        defaults["connect_timeout"] = CONNECT_TIMEOUT_S
    if "PGAPPNAME" not in os.environ:
        defaults["application_name"] = "eventfleet"
    extra = {k: v for k, v in defaults.items() if k not in given}
    try:
        conn = psycopg.connect(dsn, autocommit=True, **extra)
    except psycopg.Error as e:
        raise SinkError(_cannot_connect(dsn, e)) from e
    try:
        # never wait forever on a lock a frozen worker holds, nor hold ours if we freeze
        conn.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
        conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT_S}s'")
    except psycopg.Error as e:
        conn.close()
        raise SinkError(f"PostgreSQL at {describe_target(dsn)}: setting up the session failed: {_first_line(e)}") from e
    return conn


def describe_target(dsn: str) -> str:
    """host:port (database, user) the DSN and the PG* variables point at; never the password."""
    params = conninfo.conninfo_to_dict(dsn)
    env = os.environ

    def pick(key: str, var: str, default: str) -> str:
        return str(params.get(key) or env.get(var) or default)

    host = pick("host", "PGHOST", "") or pick("hostaddr", "PGHOSTADDR", "")
    port = pick("port", "PGPORT", "5432")
    user = pick("user", "PGUSER", _login_name())
    db = pick("dbname", "PGDATABASE", user)
    if host and not host.startswith("/"):
        return f"{host}:{port} (database {db}, user {user})"
    return f"the local Unix socket{' in ' + host if host else ''} (port {port}, database {db}, user {user})"


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "?"


def _cannot_connect(dsn: str, e: psycopg.Error) -> str:
    source = "sink.dsn" if dsn else "the PG* environment variables (no sink.dsn)"
    setting = "sink.dsn" if dsn else "sink.dsn, or PGHOST and PGPORT,"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    reason = reason.rsplit(" failed: ", 1)[-1]
    unreachable = any(
        w in reason.lower() for w in ("refused", "timeout", "timed out", "translate host", "no such file")
    )
    if unreachable:
        fix = (
            "start the server (e.g. systemctl start postgresql, pg_ctl start, or eventfleet postgres up for a "
            f"local one), or point {setting} at a running server"
        )
    else:
        fix = f"check the user, password (PGPASSWORD or ~/.pgpass) and database given by {source}"
    return f"cannot connect to PostgreSQL at {describe_target(dsn)}, set by {source}: {reason}. Fix: {fix}"


def _where(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return f"{info.host}:{info.port}" if not info.host.startswith("/") else f"{info.host} port {info.port}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _lock_key(table: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"eventfleet:{table}".encode(), digest_size=8).digest(), "big", signed=True)


# -- the catalog ---------------------------------------------------------------------------------


def _existing_columns(conn: psycopg.Connection[Any] | psycopg.Cursor[Any], name: str) -> list[tuple[str, str]]:
    """(column, type) of a table in the first schema of the search path; empty if it does not exist.
    (From the catalog: information_schema hides the tables this user has no privilege on.)"""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (name,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _primary_key_name(cur: psycopg.Cursor[Any], name: str) -> str | None:
    """The name of the primary-key constraint of table ``name`` in the first schema of the search path."""
    cur.execute(
        "SELECT con.conname FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = %s AND con.contype = 'p'",
        (name,),
    )
    row = cur.fetchone()
    return None if row is None else str(row[0])


def check(pipeline: Pipeline) -> list[str]:
    """For ``check-config``: connect, and check that every table either matches the pipeline or
    can be created, and that this user may read and write them. Creates nothing."""
    dsn = pipeline.sink.dsn or ""
    with connect(dsn) as conn:
        where = f"PostgreSQL {conn.info.server_version // 10000}.{conn.info.server_version % 10000} at " + (
            describe_target(dsn)
        )
        try:
            schema = conn.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise SinkError(f"{where}: the search_path names no existing schema to create the tables in")
            missing, present = [], []
            deleted_by_flushes = {f"{pipeline.sink.table}_checkpoints", f"{pipeline.sink.table}_replay"}
            for name, columns in tables(pipeline, POSTGRES).items():
                found = _existing_columns(conn, name)
                if not found:
                    missing.append(name)
                    continue
                if found != [(c, t) for c, t, _ in columns]:
                    raise mismatch(name, found, columns, pipeline.sink.table)
                # a flush also deletes checkpoints it thins and replay filters once passed
                needed = ["SELECT", "INSERT", "UPDATE"] + (["DELETE"] if name in deleted_by_flushes else [])
                for privilege in needed:
                    ok = conn.execute("SELECT has_table_privilege(%s, %s)", (f'"{name}"', privilege)).fetchone()
                    if not (ok and ok[0]):
                        raise SinkError(
                            f"{where}: user {conn.info.user} lacks {privilege} on table {name!r}. Fix: "
                            f"GRANT {', '.join(needed)} ON {name} TO {conn.info.user}"
                        )
                present.append(name)
            if f"{pipeline.sink.table}_pipeline" in present:
                with conn.cursor() as cur:
                    check_signature(cur, POSTGRES, pipeline.sink.table, pipeline_signature(pipeline), "", create=False)
            ok = conn.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')").fetchone()
            if not (ok and ok[0]):
                raise SinkError(
                    f"{where}: user {conn.info.user} may not create temporary tables (writes stage rows in one). "
                    f"Fix: GRANT TEMPORARY ON DATABASE {conn.info.dbname} TO {conn.info.user}"
                )
            if missing:
                ok = conn.execute("SELECT has_schema_privilege(current_schema(), 'CREATE')").fetchone()
                if not (ok and ok[0]):
                    raise SinkError(
                        f"{where}: tables {', '.join(missing)} do not exist and user {conn.info.user} may not "
                        f"create tables in schema {schema[0]}. Fix: GRANT CREATE ON SCHEMA {schema[0]} TO "
                        f"{conn.info.user}, or create them as an owner by running a worker once"
                    )
        except psycopg.Error as e:
            raise SinkError(f"{where}: checking the tables failed: {_first_line(e)}") from e
    parts = []
    if present:
        parts.append(f"tables {', '.join(present)} match and can be written")
    if missing:
        parts.append(f"{', '.join(missing)} will be created in schema {schema[0]}")
    return [f"{where}: " + "; ".join(parts)]


# -- the [sink] keys -----------------------------------------------------------------------------


def parse_settings(t: Mapping[str, Any], base: Path) -> SinkSettings:
    """``[sink] type = "postgres"``: ``table``, and ``dsn`` (a libpq connection string or URI,
    checked for syntax only: connecting is check-config's job); without it, libpq reads PGHOST,
    PGPORT, PGUSER, PGDATABASE, PGPASSWORD... at connect time."""
    table = _identifier("sink.table", t.get("table"))
    if "dsn" not in t:
        return SinkSettings("postgres", None, table, None)
    dsn = _string(t, "sink.dsn", "dsn")
    try:
        conninfo.conninfo_to_dict(dsn)
    except Exception as e:
        raise ConfigError(
            "sink.dsn",
            f"not a PostgreSQL connection string ({str(e).splitlines()[0]})",
            'write e.g. dsn = "postgresql://eventfleet@db.example:5432/stats", or remove it to use PGHOST, PGPORT...',
        ) from None
    return SinkSettings("postgres", None, table, dsn)


def check_names(pipeline: Pipeline) -> None:
    """PostgreSQL silently truncates names past 63 bytes: refuse them instead."""
    table, aggregate = pipeline.sink.table, pipeline.aggregate
    if len((table + LONGEST_SUFFIX).encode()) > NAME_BYTES:
        raise ConfigError(
            "sink.table",
            f"{table!r} is too long for PostgreSQL ({table}{LONGEST_SUFFIX} must fit in {NAME_BYTES} bytes)",
            f"use at most {NAME_BYTES - len(LONGEST_SUFFIX)} characters",
        )
    columns = [("aggregate.group_by", g) for g in aggregate.group_by]
    for m in aggregate.metrics:  # a sketch metric's columns too: latency_p99_9, latency_sketch...
        derived = [*estimate_columns(m), *([sketch_column(m)] if m.kind in SKETCH_KINDS else [])]
        columns += [(f"aggregate.metrics.{m.name}", c) for c in derived]
    for key, name in columns:
        if len(name.encode()) > NAME_BYTES:
            raise ConfigError(
                key, f"{name!r} is longer than PostgreSQL's {NAME_BYTES}-byte column names", "use a shorter name"
            )


SINK = SinkType(
    keys=("type", "dsn", "table"), parse=parse_settings, open=PostgresSink, check=check, check_pipeline=check_names
)
