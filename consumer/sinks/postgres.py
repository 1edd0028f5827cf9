"""The shared sink: PostgreSQL, for fleets spread over several machines.

The same tables and the same guarantee as the SQLite sink: ``<table>`` (the aggregates),
``<table>_positions`` (per group/topic/partition: next offset, watermark, late and invalid
counts), ``<table>_rejects`` (undecodable messages), ``<table>_pipeline`` (what the table
computes), and for replay ``<table>_checkpoints`` (past positions, one per window of the
watermark) and ``<table>_replay`` (the filters of an unfinished replay). One
:meth:`PostgresSink.write` is one transaction: the position rows are compare-and-set, the
partials merged with ``INSERT ... ON CONFLICT DO UPDATE`` (count and sum add, min and max
compare), the checkpoints kept and the passed replay filters dropped, then COMMIT; or it raises
and nothing is written.

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

Replay (docs/replay.md; the :class:`~consumer.sinks.ReplayableSink` methods at the end of the
class) has the same semantics as in the SQLite sink. Two points are PostgreSQL's own. The clone
for ``--into`` copies rows, positions, filters, checkpoints and rejects in several statements
while the live fleet keeps writing: it runs at REPEATABLE READ, so that every statement reads the
same snapshot (at READ COMMITTED, a flush committing between two of them would pair rows of one
flush with positions of another). The swap renames the six tables (and their primary-key
constraints) with ``ALTER TABLE ... RENAME`` and exchanges the two groups' rows, all in one
transaction: other sessions see the old tables or the new ones, never a mix.

Tables created before replay existed (the four above, without ``_checkpoints`` and ``_replay``)
are upgraded additively: opening the sink creates the two missing tables and changes nothing
else. Until the first flushes write checkpoints, a replay from a time restarts from the earliest
offset (exact while the topic still holds offset 0; otherwise the replay is refused with the fix).
"""

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import conninfo, sql

from .. import faults
from ..aggregate import State
from ..config import Pipeline
from ..errors import PositionConflict, SinkError
from ..types import Position, PositionWrite, Reject, ReplayFilter, ReplayReset, TopicPartition
from ..window import NO_WATERMARK
from .base import ReplayableSink
from .sqlite import CHECKPOINT_DENSE_MS, CHECKPOINT_SPARSE_MS, TABLE_SUFFIXES, pipeline_signature

# Avro type -> column type. 64-bit integers throughout: counts, sums of int/long fields, offsets
# and times never overflow on realistic data (a sum of 5,000,000 per event reaches 2^63 after
# 1.8 trillion events in one window and key); an overflow would be an error, never a wrap.
_PG_TYPES = {
    "long": "bigint",
    "int": "bigint",
    "boolean": "boolean",
    "float": "double precision",
    "double": "double precision",
}
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = 10.0  # a row held longer by another session (a frozen zombie) fails the write: pause, retry
IDLE_IN_TRANSACTION_TIMEOUT_S = 60  # the server ends our session if we freeze inside a transaction
STRATEGIES = ("copy", "unnest", "executemany")
"""How partials are merged; the first is the default. bench/pg_write.py measures them: binary
COPY into a temporary table plus one INSERT ... SELECT is 1.5 to 2.3 times as fast as
executemany (which psycopg pipelines) from 1,000 to 100,000 rows per flush; unnest in between."""

_MERGE_RULES = {  # the SQL of aggregate.merge: {t} is the stored row, excluded the new partial
    "count": "{t}.{c} + excluded.{c}",
    "sum": "{t}.{c} + excluded.{c}",
    "min": "LEAST({t}.{c}, excluded.{c})",
    "max": "GREATEST({t}.{c}, excluded.{c})",
}
Column = tuple[str, str, bool]  # name, type, NOT NULL


class PostgresSink(ReplayableSink):
    def __init__(self, pipeline: Pipeline, strategy: str = STRATEGIES[0]) -> None:
        self.pipeline = pipeline
        self.dsn = pipeline.sink.dsn or ""  # empty: libpq reads the PG* environment variables
        self.table = pipeline.sink.table
        self.window_size_ms = pipeline.window.size_ms
        self.strategy = strategy
        self.key_cols = ["window_start", *pipeline.aggregate.group_by]
        self.tables = _tables(pipeline)
        self.columns = [c[0] for c in self.tables[self.table]]
        self.types = [c[1] for c in self.tables[self.table]]
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._staged = False  # the COPY strategy's temporary table exists on this connection
        self._address = describe_target(self.dsn)  # for messages: host:port of the last connection
        t = sql.Identifier(self.table)
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        key = sql.SQL(", ").join(map(sql.Identifier, self.key_cols))
        merge = []
        for m in pipeline.aggregate.metrics:
            c = sql.Identifier(m.name)
            rule = _MERGE_RULES[m.kind]
            merge.append(sql.SQL("{c} = " + rule).format(c=c, t=t))
        on_conflict = sql.SQL("ON CONFLICT ({key}) DO UPDATE SET {merge}").format(
            key=key, merge=sql.SQL(", ").join(merge)
        )
        self._upsert_values = sql.SQL("INSERT INTO {t} ({cols}) VALUES ({ph}) {oc}").format(
            t=t, cols=cols, ph=sql.SQL(", ").join(sql.Placeholder() * len(self.columns)), oc=on_conflict
        )
        unnest = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(ty)) for ty in self.types)
        self._upsert_unnest = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT * FROM unnest({u}) AS u ({cols}) ORDER BY {key} {oc}"
        ).format(t=t, cols=cols, u=unnest, key=key, oc=on_conflict)
        self._stage = sql.Identifier("eventfleet_stage")  # temporary: one per connection
        self._upsert_staged = sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} ORDER BY {key} {oc}").format(
            t=t, cols=cols, s=self._stage, key=key, oc=on_conflict
        )
        self._copy = sql.SQL("COPY {s} ({cols}) FROM STDIN (FORMAT BINARY)").format(s=self._stage, cols=cols)
        self._positions = sql.Identifier(f"{self.table}_positions")
        self._rejects = sql.Identifier(f"{self.table}_rejects")
        self._checkpoints = sql.Identifier(f"{self.table}_checkpoints")
        self._replay = sql.Identifier(f"{self.table}_replay")
        self._checkpoint_windows: dict[tuple[str, str, int], int] = {}  # last watermark window thinned at
        conn = self._connection()
        try:
            with conn.transaction():
                # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS can collide
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.table),))
                for name, columns in self.tables.items():
                    _ensure_table(conn, name, columns, _primary_keys(pipeline)[name], self.pipeline)
                _check_signature(conn, self.table, pipeline_signature(pipeline), create=True)
        except psycopg.Error as e:
            self.close()
            raise SinkError(f"cannot set up the PostgreSQL sink tables at {self._address}: {_first_line(e)}") from e
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

    # -- the Sink protocol -------------------------------------------------------------------

    def read_positions(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, Position]:
        query = sql.SQL(
            "SELECT p.topic, p.partition, p.next_offset, p.watermark, p.late_events, p.invalid_events, "
            "r.windows_from, r.until_offset FROM {} p LEFT JOIN {} r ON r.consumer_group = p.consumer_group "
            "AND r.topic = p.topic AND r.partition = p.partition "
            "AND r.until_offset > p.next_offset "  # a filter passed is inert
            "WHERE p.consumer_group = %s"
        ).format(self._positions, self._replay)
        wanted = set(partitions)
        for attempt in (1, 2):  # a read is safe to repeat: once more on a fresh connection
            try:
                rows = self._connection().execute(query, (group,)).fetchall()
                break
            except psycopg.Error as e:
                error = self._failed("read of the positions", e)
                if attempt == 2:
                    raise error from e
        found = {}
        for topic, partition, offset, watermark, late, invalid, floor, until in rows:
            if (topic, partition) in wanted:
                replay = None if floor is None else ReplayFilter(floor, until)
                found[(topic, partition)] = Position(topic, partition, offset, watermark, late, invalid, replay)
        return found

    def write(self, group: str, partials: State, positions: list[PositionWrite], rejects: list[Reject]) -> None:
        now_ms = int(time.time() * 1000)
        conn = self._connection()
        try:
            if self.strategy == "copy" and not self._staged:  # once per connection, outside the transaction
                conn.execute(
                    sql.SQL(
                        "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(self._stage, sql.Identifier(self.table))
                )
                self._staged = True
            with conn.transaction(), conn.cursor() as cur:
                ordered = sorted(positions, key=lambda w: (w.new.topic, w.new.partition))  # lock order
                conflicts = [
                    (w.new.topic, w.new.partition) for w in ordered if not self._set_position(cur, group, w, now_ms)
                ]
                if conflicts:
                    raise PositionConflict(conflicts)  # leaving the block rolls the transaction back
                if partials:
                    self._merge(cur, partials)
                thinned = self._checkpoint(cur, group, ordered, now_ms) if ordered else {}
                if rejects:
                    cur.executemany(
                        sql.SQL(
                            "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s) "
                            "ON CONFLICT (topic, partition, kafka_offset) DO UPDATE SET timestamp_ms = "
                            "excluded.timestamp_ms, key = excluded.key, value = excluded.value, error = excluded.error"
                        ).format(self._rejects),
                        [(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.error) for r in rejects],
                    )
                faults.reach("in_sink_transaction")
        except psycopg.Error as e:
            raise self._failed("write", e) from e
        self._checkpoint_windows.update(thinned)  # committed: no need to thin these again in this window

    def _set_position(self, cur: psycopg.Cursor[tuple[Any, ...]], group: str, w: PositionWrite, now_ms: int) -> bool:
        """Compare-and-set one position row; False when another worker moved it (see the module
        docstring for why this is exact under READ COMMITTED)."""
        p = w.new
        values = (p.next_offset, p.watermark, p.late_events, p.invalid_events, now_ms)
        if w.expected_offset is None:
            cur.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
                    self._positions
                ),
                (group, p.topic, p.partition, *values),
            )
        else:  # under the row lock, against the latest committed row: one of two racing writers wins
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET next_offset = %s, watermark = %s, late_events = %s, invalid_events = %s, "
                    "updated_at_ms = %s WHERE consumer_group = %s AND topic = %s AND partition = %s "
                    "AND next_offset = %s"
                ).format(self._positions),
                (*values, group, p.topic, p.partition, w.expected_offset),
            )
        return cur.rowcount == 1

    def _checkpoint(
        self, cur: psycopg.Cursor[tuple[Any, ...]], group: str, positions: list[PositionWrite], now_ms: int
    ) -> dict[tuple[str, str, int], int]:
        """Keep each new position and each state passed as a checkpoint, the highest offset per
        window of its watermark (a replay rewinds to the last one whose watermark is below the
        replayed windows), drop the replay filters the positions have passed, and thin the old
        checkpoints of partitions whose watermark entered a new window. Three statements whatever
        the number of partitions: a flush writes few checkpoints (at most one per partition and
        window of the watermark passed), so arrays beat a COPY and its staging table here.
        Returns the (group, topic, partition) -> watermark window thinned, for after the commit."""
        best: dict[tuple[str, int, int], Position] = {}  # one row per key: ON CONFLICT touches a row once
        for w in positions:
            for p in [*w.passed, w.new]:
                key = (p.topic, p.partition, self._watermark_window(p.watermark))
                if key not in best or p.next_offset > best[key].next_offset:
                    best[key] = p
        keys = sorted(best)
        kept = [best[k] for k in keys]
        cur.execute(  # within a window of the watermark the highest offset wins: a replay writing the
            # same states again never moves a checkpoint back
            sql.SQL(
                "INSERT INTO {c} AS c (consumer_group, topic, partition, watermark_window, next_offset, watermark, "
                "late_events, invalid_events, written_at_ms) SELECT %s, u.*, %s FROM unnest(%s::text[], "
                "%s::integer[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) AS u "
                "ON CONFLICT (consumer_group, topic, partition, watermark_window) DO UPDATE SET "
                "next_offset = excluded.next_offset, watermark = excluded.watermark, late_events = "
                "excluded.late_events, invalid_events = excluded.invalid_events, written_at_ms = "
                "excluded.written_at_ms WHERE excluded.next_offset > c.next_offset"
            ).format(c=self._checkpoints),
            (group, now_ms, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
             [p.next_offset for p in kept], [p.watermark for p in kept], [p.late_events for p in kept],
             [p.invalid_events for p in kept]),
        )  # fmt: skip
        news = [w.new for w in positions]
        cur.execute(  # a replay filter is done with once the position passed it
            sql.SQL(
                "DELETE FROM {r} AS r USING unnest(%s::text[], %s::integer[], %s::bigint[]) AS n (topic, partition, "
                "next_offset) WHERE r.consumer_group = %s AND r.topic = n.topic AND r.partition = n.partition "
                "AND r.until_offset <= n.next_offset"
            ).format(r=self._replay),
            ([p.topic for p in news], [p.partition for p in news], [p.next_offset for p in news], group),
        )
        thin: dict[TopicPartition, tuple[int, int]] = {}  # -> (window of the watermark, cutoff)
        for p in news:
            wm_window = self._watermark_window(p.watermark)
            if self._checkpoint_windows.get((group, p.topic, p.partition)) != wm_window and p.watermark != NO_WATERMARK:
                thin[(p.topic, p.partition)] = (wm_window, p.watermark - CHECKPOINT_DENSE_MS)
        if thin:
            self._thin_checkpoints(cur, group, {tp: cutoff for tp, (_, cutoff) in thin.items()})
        return {(group, *tp): wm_window for tp, (wm_window, _) in thin.items()}

    def _watermark_window(self, watermark: int) -> int:
        return watermark if watermark == NO_WATERMARK else watermark - watermark % self.window_size_ms

    def _thin_checkpoints(
        self, cur: psycopg.Cursor[tuple[Any, ...]], group: str, cutoffs: dict[TopicPartition, int]
    ) -> None:
        """Per partition, below its cutoff (event time), keep only the last checkpoint per
        CHECKPOINT_SPARSE_MS. Runs for the partitions whose watermark entered a new window."""
        parts = sorted(cutoffs)
        cur.execute(
            sql.SQL(
                "DELETE FROM {c} AS c USING (SELECT x.topic, x.partition, x.watermark_window, x.next_offset, "
                "max(x.next_offset) OVER (PARTITION BY x.topic, x.partition, "
                "x.watermark_window - x.watermark_window %% %s) AS keep "
                "FROM unnest(%s::text[], %s::integer[], %s::bigint[]) AS k (topic, partition, cutoff) "
                "JOIN {c} x ON x.consumer_group = %s AND x.topic = k.topic AND x.partition = k.partition "
                "AND x.watermark_window < k.cutoff AND x.watermark_window > %s) d "
                "WHERE c.consumer_group = %s AND c.topic = d.topic AND c.partition = d.partition "
                "AND c.watermark_window = d.watermark_window AND d.next_offset < d.keep"
            ).format(c=self._checkpoints),
            (CHECKPOINT_SPARSE_MS, [t for t, _ in parts], [q for _, q in parts], [cutoffs[tp] for tp in parts],
             group, NO_WATERMARK, group),
        )  # fmt: skip

    def _merge(self, cur: psycopg.Cursor[tuple[Any, ...]], partials: State) -> None:
        """Merge the partials into the aggregates table, in key order (no deadlocks between
        workers merging the same keys)."""
        size = self.window_size_ms
        rows = [(k[0], k[0] + size, *k[1:], *v) for k, v in sorted(partials.items())]
        if self.strategy == "unnest":  # one statement, one array parameter per column
            cur.execute(self._upsert_unnest, [list(c) for c in zip(*rows, strict=True)])
        elif self.strategy == "copy":  # binary COPY into the temporary table, then one upsert
            with cur.copy(self._copy) as copy:
                copy.set_types(self.types)
                for row in rows:
                    copy.write_row(row)
            cur.execute(self._upsert_staged)
        else:  # one INSERT per row, sent back to back (psycopg pipelines executemany)
            cur.executemany(self._upsert_values, rows)

    def results(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            sql.Identifier(self.table),
            sql.SQL(", ").join(map(sql.Identifier, self.key_cols)),
        )
        try:
            rows = self._connection().execute(query).fetchall()
        except psycopg.Error as e:
            raise self._failed("read of the results", e) from e
        return self.columns, rows

    # -- replay (ReplayableSink) ----------------------------------------------------------------

    def replay_checkpoints(
        self, group: str, watermark_below: int, offset_at_most: dict[TopicPartition, int]
    ) -> dict[TopicPartition, Position]:
        parts = sorted(offset_at_most)
        query = sql.SQL(
            "SELECT n.topic, n.partition, c.next_offset, c.watermark, c.late_events, c.invalid_events "
            "FROM unnest(%s::text[], %s::integer[], %s::bigint[]) AS n (topic, partition, most) "
            "CROSS JOIN LATERAL (SELECT next_offset, watermark, late_events, invalid_events FROM {} "
            "WHERE consumer_group = %s AND topic = n.topic AND partition = n.partition AND watermark_window < %s "
            "AND watermark < %s AND next_offset <= n.most ORDER BY next_offset DESC LIMIT 1) c"
        ).format(self._checkpoints)
        params = ([t for t, _ in parts], [q for _, q in parts], [offset_at_most[tp] for tp in parts], group,
                  watermark_below, watermark_below)  # fmt: skip
        try:
            rows = self._connection().execute(query, params).fetchall()
        except psycopg.Error as e:
            raise self._failed("read of the replay checkpoints", e) from e
        return {(r[0], r[1]): Position(*r) for r in rows}

    def replay_reset(self, group: str, reset: ReplayReset) -> int:
        now_ms = int(time.time() * 1000)
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE window_start >= %s").format(sql.Identifier(self.table)),
                    (reset.windows_from,),
                )
                deleted = cur.rowcount
                cur.execute(sql.SQL("DELETE FROM {} WHERE consumer_group = %s").format(self._replay), (group,))
                if reset.forget_checkpoints:
                    cur.execute(sql.SQL("DELETE FROM {} WHERE consumer_group = %s").format(self._checkpoints), (group,))
                positions = sorted(reset.positions, key=lambda p: (p.topic, p.partition))
                if positions:  # unconditionally: no worker may run during a replay's reset
                    cur.executemany(
                        sql.SQL(
                            "INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                            "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = "
                            "excluded.next_offset, watermark = excluded.watermark, late_events = "
                            "excluded.late_events, invalid_events = excluded.invalid_events, updated_at_ms = "
                            "excluded.updated_at_ms"
                        ).format(self._positions),
                        [(group, p.topic, p.partition, p.next_offset, p.watermark, p.late_events, p.invalid_events,
                          now_ms) for p in positions],
                    )  # fmt: skip
                filters = [(group, p.topic, p.partition, p.replay.floor, p.replay.until, now_ms)
                           for p in positions if p.replay is not None]  # fmt: skip
                if filters:
                    cur.executemany(
                        sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(self._replay), filters
                    )
                faults.reach("in_replay_reset")
        except psycopg.Error as e:
            raise self._failed("replay reset", e) from e
        self._checkpoint_windows.clear()
        return int(deleted)

    def replay_windows(self, windows_from: int) -> tuple[int, int]:
        query = sql.SQL("SELECT count(DISTINCT window_start), count(*) FROM {} WHERE window_start >= %s").format(
            sql.Identifier(self.table)
        )
        try:
            row = self._connection().execute(query, (windows_from,)).fetchone()
        except psycopg.Error as e:
            raise self._failed("count of the windows", e) from e
        assert row is not None
        return int(row[0]), int(row[1])

    def replay_tables(self) -> list[str]:
        return [self.table + suffix for suffix in TABLE_SUFFIXES]

    def replay_table_exists(self, table: str) -> bool:
        try:
            return bool(_existing_columns(self._connection(), table))
        except psycopg.Error as e:
            raise self._failed(f"look-up of table {table!r}", e) from e

    def replay_clone(self, table: str, group: str, to_group: str, windows_below: int) -> None:
        src = self.table
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                # one snapshot for every statement below: rows and positions of the same flushes,
                # although the live fleet keeps committing meanwhile (READ COMMITTED would not do)
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                for suffix in ("", "_positions", "_checkpoints", "_replay"):
                    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table + suffix)))
                    if (cur.fetchone() or (False,))[0]:
                        raise SinkError(f"cannot clone {src!r} into {table!r}: {table + suffix} is not empty")
                cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
                cur.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE window_start < %s").format(
                        sql.Identifier(table), cols, cols, sql.Identifier(src)
                    ),
                    (windows_below,),
                )
                for suffix in ("_positions", "_checkpoints", "_replay"):
                    names = [c[0] for c in self.tables[src + suffix]]
                    picked = [sql.Placeholder() if c == "consumer_group" else sql.Identifier(c) for c in names]
                    cur.execute(
                        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE consumer_group = %s").format(
                            sql.Identifier(table + suffix), sql.SQL(", ").join(map(sql.Identifier, names)),
                            sql.SQL(", ").join(picked), sql.Identifier(src + suffix),
                        ),
                        (to_group, group),
                    )  # fmt: skip
                names = [c[0] for c in self.tables[src + "_rejects"]]
                cols = sql.SQL(", ").join(map(sql.Identifier, names))
                cur.execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                        sql.Identifier(table + "_rejects"), cols, cols, sql.Identifier(src + "_rejects")
                    )
                )
        except psycopg.Error as e:
            raise self._failed(f"clone of {src!r} into {table!r}", e) from e

    def replay_swap(self, table: str, group: str, other_group: str) -> None:
        live = self.table
        parked = "eventfleet_swap"  # short: live + suffix fits in 63 bytes, this must too
        parked_group = f"eventfleet.swap.{os.getpid()}.{time.time_ns()}"  # no real group's rows collide
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                for suffix in TABLE_SUFFIXES:
                    a, b, t = (sql.Identifier(n + suffix) for n in (live, table, parked))
                    keys = [_primary_key_name(cur, n + suffix) for n in (live, table)]
                    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(a, t))
                    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(b, a))
                    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(t, b))
                    if None not in keys:  # the primary keys' names follow their tables (a new table's
                        # <name>_pkey stays free); the same three steps through a parked name
                        ours, theirs = (sql.Identifier(k) for k in keys if k is not None)
                        spare = sql.Identifier(parked + "_pkey")
                        rename = sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}")
                        cur.execute(rename.format(a, theirs, spare))  # a is the shadow's table now
                        cur.execute(rename.format(b, ours, theirs))
                        cur.execute(rename.format(a, spare, ours))
                for name in (live, table):
                    for suffix in ("_positions", "_checkpoints", "_replay"):
                        # three steps: a unique key is checked row by row, so one UPDATE exchanging
                        # the groups would collide where both have a row for the same partition
                        for src, dst in ((group, parked_group), (other_group, group), (parked_group, other_group)):
                            cur.execute(
                                sql.SQL("UPDATE {} SET consumer_group = %s WHERE consumer_group = %s").format(
                                    sql.Identifier(name + suffix)
                                ),
                                (dst, src),
                            )
        except psycopg.Error as e:
            raise self._failed(f"swap of {live!r} and {table!r}", e) from e
        self._checkpoint_windows.clear()


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


# -- the tables ----------------------------------------------------------------------------------


def _tables(pipeline: Pipeline) -> dict[str, list[Column]]:
    """Every table of the sink with its columns, in order."""
    table = pipeline.sink.table
    return {
        table: [(c, _PG_TYPES.get(t, "text"), True) for c, t in pipeline.column_types().items()],
        f"{table}_positions": [
            ("consumer_group", "text", True), ("topic", "text", True), ("partition", "integer", True),
            ("next_offset", "bigint", True), ("watermark", "bigint", True), ("late_events", "bigint", True),
            ("invalid_events", "bigint", True), ("updated_at_ms", "bigint", True),
        ],
        f"{table}_rejects": [
            ("topic", "text", True), ("partition", "integer", True), ("kafka_offset", "bigint", True),
            ("timestamp_ms", "bigint", True), ("key", "bytea", False), ("value", "bytea", False),
            ("error", "text", True),
        ],
        f"{table}_pipeline": [("key", "text", True), ("value", "text", True)],
        f"{table}_checkpoints": [
            ("consumer_group", "text", True), ("topic", "text", True), ("partition", "integer", True),
            ("watermark_window", "bigint", True), ("next_offset", "bigint", True), ("watermark", "bigint", True),
            ("late_events", "bigint", True), ("invalid_events", "bigint", True), ("written_at_ms", "bigint", True),
        ],
        f"{table}_replay": [
            ("consumer_group", "text", True), ("topic", "text", True), ("partition", "integer", True),
            ("windows_from", "bigint", True), ("until_offset", "bigint", True), ("started_at_ms", "bigint", True),
        ],
    }  # fmt: skip


def _primary_keys(pipeline: Pipeline) -> dict[str, list[str]]:
    table = pipeline.sink.table
    return {
        table: ["window_start", *pipeline.aggregate.group_by],
        f"{table}_positions": ["consumer_group", "topic", "partition"],
        f"{table}_rejects": ["topic", "partition", "kafka_offset"],
        f"{table}_pipeline": ["key"],
        f"{table}_checkpoints": ["consumer_group", "topic", "partition", "watermark_window"],
        f"{table}_replay": ["consumer_group", "topic", "partition"],
    }


def _existing_columns(conn: psycopg.Connection[Any], name: str) -> list[tuple[str, str]]:
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


def _mismatch(name: str, found: list[tuple[str, str]], columns: Sequence[Column], table: str) -> SinkError:
    wanted = [(c[0], c[1]) for c in columns]
    return SinkError(
        f"table {name!r} has columns {_show(found)}, but the pipeline writes {_show(wanted)}. Use another "
        f"[sink] table, or drop the old tables ({_companions(table)}) to recompute from the topic"
    )


def _companions(table: str) -> str:
    return ", ".join(table + suffix for suffix in TABLE_SUFFIXES)


def _show(columns: Iterable[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{c} {t}" for c, t in columns) + ")"


def _ensure_table(
    conn: psycopg.Connection[Any], name: str, columns: Sequence[Column], key: list[str], pipeline: Pipeline
) -> None:
    found = _existing_columns(conn, name)
    if not found:
        defs = [
            sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(t), sql.SQL(" NOT NULL" if not_null else ""))
            for c, t, not_null in columns
        ]
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
                sql.Identifier(name), sql.SQL(", ").join(defs), sql.SQL(", ").join(map(sql.Identifier, key))
            )
        )
    elif found != [(c[0], c[1]) for c in columns]:
        raise _mismatch(name, found, columns, pipeline.sink.table)


def _check_signature(conn: psycopg.Connection[Any], table: str, wanted: str, create: bool) -> None:
    """Refuse a table written by a pipeline that computes something else (same columns, other
    metric kinds, fields or window size): merging into it would be silently wrong."""
    meta = sql.Identifier(f"{table}_pipeline")
    if create:
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('signature', %s) ON CONFLICT DO NOTHING").format(meta), (wanted,))
    row = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'signature'").format(meta)).fetchone()
    if row is not None and row[0] != wanted:
        raise SinkError(
            f"table {table!r} was written by a pipeline that computes {row[0]}, but this one computes {wanted}. "
            f"Use another [sink] table, or drop the old tables ({_companions(table)}) to recompute from the topic"
        )


def open_sink(pipeline: Pipeline) -> PostgresSink:
    return PostgresSink(pipeline)


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
            for name, columns in _tables(pipeline).items():
                found = _existing_columns(conn, name)
                if not found:
                    missing.append(name)
                    continue
                if found != [(c[0], c[1]) for c in columns]:
                    raise _mismatch(name, found, columns, pipeline.sink.table)
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
                _check_signature(conn, pipeline.sink.table, pipeline_signature(pipeline), create=False)
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
