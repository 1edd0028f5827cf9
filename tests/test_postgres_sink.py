"""What the PostgreSQL sink does on its own, against a real server (the shared behaviour is the
contract suite's, tests/sinks/test_contract.py): 64-bit columns, the merge strategies,
compare-and-set under concurrency and row locks, table checks, connection loss, and
check-config's sink check."""

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w

from consumer import faults
from consumer.aggregate import compile_updater
from consumer.config import Pipeline, load
from consumer.errors import ConfigError, PositionConflict, SinkError
from consumer.sinks import check_sink, open_sink
from consumer.sinks.postgres import STRATEGIES, PostgresSink, check
from consumer.sinks.sql import TABLE_SUFFIXES
from consumer.types import Position, PositionWrite

from .conftest import Postgres

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
SIZE = 60_000
METRICS = {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "hi": "max:price_micros"}


def _pipeline(
    tmp_path: Path,
    dsn: str | None,
    table: str,
    metrics: dict[str, str] | None = None,
    size: str = "1m",
    name: str = "pipeline.toml",
) -> Pipeline:
    sink: dict[str, str] = {"type": "postgres", "table": table}
    if dsn is not None:
        sink["dsn"] = dsn
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": "g"},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": size, "grace": "10s", "time_field": "ts"},
        "aggregate": {"group_by": ["campaign_id", "event_type"], "metrics": metrics or METRICS},
        "sink": sink,
    }
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


@pytest.fixture
def table(postgres: Postgres) -> Iterator[str]:
    """A fresh table name; its tables are dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres.dsn, autocommit=True) as db:
        for suffix in TABLE_SUFFIXES:
            db.execute(f'DROP TABLE IF EXISTS "{name}{suffix}"')


@pytest.fixture
def pipeline(tmp_path: Path, postgres: Postgres, table: str) -> Pipeline:
    return _pipeline(tmp_path, postgres.dsn, table)


@pytest.fixture(params=STRATEGIES)
def sink(request: pytest.FixtureRequest, pipeline: Pipeline) -> Iterator[PostgresSink]:
    """The sink, once per merge strategy: each must give the same results."""
    s = PostgresSink(pipeline, request.param)
    yield s
    s.close()


def _query(pipeline: Pipeline, query: str) -> list[tuple[Any, ...]]:
    """Read with a separate plain connection: what another client sees committed."""
    assert pipeline.sink.dsn is not None
    with psycopg.connect(pipeline.sink.dsn) as db:
        return db.execute(query).fetchall()


def _rows(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    t = pipeline.sink.table
    rows = _query(
        pipeline, f'SELECT window_start, window_end, campaign_id, event_type, events, spend, lo, hi FROM "{t}"'
    )
    return {(r[0], r[2], r[3]): (r[1], *r[4:]) for r in rows}


def _positions(pipeline: Pipeline) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = _query(
        pipeline,
        "SELECT consumer_group, topic, partition, next_offset, watermark, late_events, invalid_events "
        f'FROM "{pipeline.sink.table}_positions"',
    )
    return {r[:3]: r[3:] for r in rows}


def _rejects(pipeline: Pipeline) -> list[tuple[Any, ...]]:
    return _query(pipeline, f'SELECT * FROM "{pipeline.sink.table}_rejects" ORDER BY topic, partition, kafka_offset')


def _pos(partition: int, offset: int, watermark: int = 0, late: int = 0, invalid: int = 0) -> Position:
    return Position("ad-events", partition, offset, watermark, late, invalid)


def _partial(prices: list[int]) -> list[int]:
    return [len(prices), sum(prices), min(prices), max(prices)]


# ---------------------------------------------------------------------------------------------
# aggregates: the merge rules in SQL


def test_sums_and_counts_are_64_bit(pipeline: Pipeline, sink: PostgresSink) -> None:
    key = (0, "c", "click")
    big = 3 * 10**9  # past 32 bits, as a single value and as a sum
    sink.write("g", {key: [2**31, big, big, big]}, [], [])
    sink.write("g", {key: [2**31, big, -big, big]}, [], [])
    assert _rows(pipeline) == {key: (SIZE, 2**32, 2 * big, -big, big)}


def test_an_overflow_is_an_error_and_writes_nothing(pipeline: Pipeline, sink: PostgresSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 2**62, 5, 5]}, [PositionWrite(_pos(0, 1), None)], [])
    with pytest.raises(SinkError, match="out of range"):
        sink.write("g", {key: [1, 2**62, 5, 5], (SIZE, "d", "click"): [1, 1, 1, 1]}, [PositionWrite(_pos(0, 2), 1)], [])
    assert _rows(pipeline) == {key: (SIZE, 1, 2**62, 5, 5)}
    assert _positions(pipeline) == {("g", "ad-events", 0): (1, 0, 0, 0)}
    sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, 2), 1)], [])  # usable again
    assert _rows(pipeline) == {key: (SIZE, 2, 2**62 + 1, 1, 5)}


def test_float_metrics_and_boolean_keys(tmp_path: Path, postgres: Postgres, table: str) -> None:
    schema = tmp_path / "reading.avsc"
    schema.write_text(
        '{"type": "record", "name": "Reading", "fields": [{"name": "ts", "type": "long"}, '
        '{"name": "ok", "type": "boolean"}, {"name": "temp", "type": "double"}, {"name": "n", "type": "int"}]}'
    )
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["r"], "group_id": "g"},
        "schema": {"path": str(schema)},
        "window": {"size": "1m", "time_field": "ts"},
        "aggregate": {"group_by": ["ok"], "metrics": {"low": "min:temp", "total": "sum:n", "high": "max:temp"}},
        "sink": {"type": "postgres", "dsn": postgres.dsn, "table": table},
    }
    (tmp_path / "r.toml").write_text(tomli_w.dumps(doc))
    s = PostgresSink(load(tmp_path / "r.toml"))
    try:
        s.write("g", {(0, True): [-1.5, 7, 2.25], (0, False): [3.0, 1, 3.0]}, [], [])
        s.write("g", {(0, True): [-0.5, 2**40, 9.75]}, [], [])
        assert s.results()[1] == [(0, SIZE, False, 3.0, 1, 3.0), (0, SIZE, True, -1.5, 7 + 2**40, 9.75)]
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# positions: compare-and-set


@pytest.mark.parametrize("other_commits", [True, False], ids=["other-commits", "other-rolls-back"])
def test_compare_and_set_waits_for_a_concurrent_writer(pipeline: Pipeline, other_commits: bool) -> None:
    """READ COMMITTED: a flush whose position row is being moved by an open transaction waits
    for it, then conflicts if it committed, or goes through if it rolled back."""
    key = (0, "c", "click")
    sink = PostgresSink(pipeline)
    other = psycopg.connect(pipeline.sink.dsn or "")
    try:
        sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, 10), None)], [])
        other.execute(  # the other worker's transaction: it holds the row, not committed yet
            f'UPDATE "{pipeline.sink.table}_positions" SET next_offset = 15 WHERE partition = 0 AND next_offset = 10'
        )
        outcome: list[BaseException | None] = []

        def flush() -> None:
            try:
                sink.write("g", {key: [1, 2, 2, 2]}, [PositionWrite(_pos(0, 12), 10)], [])
                outcome.append(None)
            except BaseException as e:
                outcome.append(e)

        writer = threading.Thread(target=flush)
        writer.start()
        time.sleep(1.0)
        assert writer.is_alive() and not outcome  # blocked on the row lock
        if other_commits:
            other.commit()
        else:
            other.rollback()
        writer.join(30)
        assert len(outcome) == 1
        if other_commits:
            assert isinstance(outcome[0], PositionConflict)
            assert _rows(pipeline) == {key: (SIZE, 1, 1, 1, 1)}
            assert _positions(pipeline)[("g", "ad-events", 0)][0] == 15
        else:
            assert outcome[0] is None
            assert _rows(pipeline) == {key: (SIZE, 2, 3, 1, 2)}
            assert _positions(pipeline)[("g", "ad-events", 0)][0] == 12
    finally:
        other.close()
        sink.close()


def test_a_row_held_by_a_frozen_worker_fails_the_write_after_the_lock_timeout(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zombie frozen inside its transaction holds the position row: the flush does not hang,
    it fails as a SinkError (the worker pauses and retries) and writes nothing."""
    from consumer.sinks import postgres

    monkeypatch.setattr(postgres, "LOCK_TIMEOUT_S", 1.0)
    key = (0, "c", "click")
    sink = PostgresSink(pipeline)
    zombie = psycopg.connect(pipeline.sink.dsn or "")
    try:
        sink.write("g", {key: [1, 1, 1, 1]}, [PositionWrite(_pos(0, 10), None)], [])
        zombie.execute(f'SELECT * FROM "{pipeline.sink.table}_positions" FOR UPDATE')
        started = time.monotonic()
        with pytest.raises(SinkError, match="lock timeout"):
            sink.write("g", {key: [1, 2, 2, 2]}, [PositionWrite(_pos(0, 12), 10)], [])
        assert time.monotonic() - started < 30
        zombie.rollback()
        assert _rows(pipeline) == {key: (SIZE, 1, 1, 1, 1)}
        sink.write("g", {key: [1, 2, 2, 2]}, [PositionWrite(_pos(0, 12), 10)], [])
        assert _rows(pipeline) == {key: (SIZE, 2, 3, 1, 2)}
    finally:
        zombie.close()
        sink.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_merges_of_the_same_keys_lose_nothing(pipeline: Pipeline, strategy: str) -> None:
    """Two workers (own partitions, shared keys) flushing at the same time: every merge lands
    once, and sorted writes mean no deadlock (which would surface as a SinkError)."""
    keys = [(ws, f"c{c}", t) for ws in (0, SIZE) for c in range(50) for t in ("click", "impression")]
    expected: dict[tuple[Any, ...], list[int]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(partition: int, seed: int) -> None:
        rng = random.Random(seed)
        sink = PostgresSink(pipeline, strategy)
        offset = None
        try:
            for step in range(15):
                partials = {}
                for key in rng.sample(keys, 150):  # a random order each time: the sink must sort
                    prices = [rng.randint(1, 10**6) for _ in range(rng.randint(1, 3))]
                    partials[key] = _partial(prices)
                    with lock:
                        expected.setdefault(key, []).extend(prices)
                sink.write("g", partials, [PositionWrite(_pos(partition, step + 1), offset)], [])
                offset = step + 1
        except BaseException as e:
            errors.append(e)
        finally:
            sink.close()

    threads = [threading.Thread(target=worker, args=(p, p)) for p in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert _rows(pipeline) == {k: (k[0] + SIZE, len(v), sum(v), min(v), max(v)) for k, v in expected.items()}


# ---------------------------------------------------------------------------------------------
# rejects


# ---------------------------------------------------------------------------------------------
# tables: created, reopened, or refused


def test_creates_the_six_tables_with_64_bit_columns(pipeline: Pipeline, sink: PostgresSink) -> None:
    t = pipeline.sink.table
    columns = _query(
        pipeline,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_name LIKE '{t}%' ORDER BY table_name, ordinal_position",
    )
    types = {(r[0], r[1]): r[2] for r in columns}
    assert {r[0] for r in columns} == {t + suffix for suffix in TABLE_SUFFIXES}
    for column in ("window_start", "window_end", "events", "spend", "lo", "hi"):
        assert types[(t, column)] == "bigint"
    for column in ("next_offset", "watermark", "late_events", "invalid_events"):
        assert types[(f"{t}_positions", column)] == "bigint"
    assert types[(f"{t}_rejects", "kafka_offset")] == "bigint"
    for column in ("watermark_window", "next_offset", "watermark", "late_events", "invalid_events"):
        assert types[(f"{t}_checkpoints", column)] == "bigint"
    for column in ("windows_from", "until_offset"):
        assert types[(f"{t}_replay", column)] == "bigint"


@pytest.mark.parametrize(
    ("metrics", "size", "refusal"),
    [
        ({"events": "count", "spend": "sum:price_micros"}, "1m", "has columns"),
        ({**METRICS, "spend": "max:price_micros"}, "1m", "computes"),
        (METRICS, "30s", "computes"),
    ],
    ids=["other-columns", "metric-kind", "window-size"],
)
def test_check_refuses_what_opening_refuses(
    tmp_path: Path, pipeline: Pipeline, metrics: dict[str, str], size: str, refusal: str
) -> None:
    """check-config reads the tables as opening them would, and says the same, creating nothing."""
    PostgresSink(pipeline).close()
    changed = _pipeline(tmp_path, pipeline.sink.dsn, pipeline.sink.table, metrics, size, name="changed.toml")
    with pytest.raises(SinkError, match=refusal):
        PostgresSink(changed)
    with pytest.raises(SinkError, match=refusal):
        check(changed)


def test_existing_table_with_32_bit_columns_is_refused(pipeline: Pipeline) -> None:
    t = pipeline.sink.table
    assert pipeline.sink.dsn is not None
    with psycopg.connect(pipeline.sink.dsn, autocommit=True) as db:
        db.execute(
            f'CREATE TABLE "{t}" (window_start bigint, window_end bigint, campaign_id text, event_type text, '
            "events integer, spend integer, lo bigint, hi bigint)"
        )
    with pytest.raises(SinkError, match="events integer"):
        PostgresSink(pipeline)


def test_concurrent_first_opens_create_the_tables_once(pipeline: Pipeline) -> None:
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            PostgresSink(pipeline).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


# ---------------------------------------------------------------------------------------------
# connecting: the PG* variables, a lost connection, a restarted server


def test_without_dsn_the_pg_environment_variables_are_used(
    tmp_path: Path, postgres: Postgres, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = psycopg.conninfo.conninfo_to_dict(postgres.dsn)
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("dbname", "PGDATABASE"),
                     ("password", "PGPASSWORD")):  # fmt: skip
        if key in params:
            monkeypatch.setenv(var, str(params[key]))
    p = _pipeline(tmp_path, None, table)
    assert p.sink.dsn is None
    s = open_sink(p)
    try:
        s.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(_pos(0, 1), None)], [])
        assert s.results()[1] == [(0, SIZE, "c", "click", 1, 5, 5, 5)]
    finally:
        s.close()
    assert "match and can be written" in "\n".join(check_sink(p))


def test_a_lost_connection_fails_the_write_then_reconnects(pipeline: Pipeline, sink: PostgresSink) -> None:
    key = (0, "c", "click")
    sink.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 1), None)], [])
    assert pipeline.sink.dsn is not None
    with psycopg.connect(pipeline.sink.dsn, autocommit=True) as admin:  # the server drops the sink's session
        (killed,) = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'eventfleet' AND pid <> pg_backend_pid()) t"
        ).fetchone() or (0,)
    assert killed >= 1
    with pytest.raises(SinkError, match="PostgreSQL write"):
        sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(_pos(0, 2), 1)], [])
    assert _rows(pipeline) == {key: (SIZE, 1, 5, 5, 5)}  # nothing written
    sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(_pos(0, 2), 1)], [])  # the same flush, retried
    assert _rows(pipeline) == {key: (SIZE, 2, 12, 5, 7)}
    assert _positions(pipeline) == {("g", "ad-events", 0): (2, 0, 0, 0)}


def test_reads_survive_a_lost_connection(pipeline: Pipeline) -> None:
    sink = PostgresSink(pipeline)
    try:
        sink.write("g", {}, [PositionWrite(_pos(0, 3), None)], [])
        with psycopg.connect(pipeline.sink.dsn or "", autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'eventfleet' AND pid <> pg_backend_pid()"
            )
        assert sink.read_positions("g", [("ad-events", 0)]) == {("ad-events", 0): _pos(0, 3)}
    finally:
        sink.close()


def test_a_server_restart_fails_writes_until_it_is_back(postgres: Postgres, pipeline: Pipeline) -> None:
    server = postgres.restartable()
    key = (0, "c", "click")
    sink = PostgresSink(pipeline)
    try:
        sink.write("g", {key: [1, 5, 5, 5]}, [PositionWrite(_pos(0, 1), None)], [])
        server.stop("fast")
        try:
            for _ in range(2):  # the dead connection, then a refused reconnect
                with pytest.raises(SinkError) as info:
                    sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(_pos(0, 2), 1)], [])
            assert f"127.0.0.1:{server.port}" in str(info.value) and "Fix:" in str(info.value)
        finally:
            server.start()
        sink.write("g", {key: [1, 7, 7, 7]}, [PositionWrite(_pos(0, 2), 1)], [])
        assert _rows(pipeline) == {key: (SIZE, 2, 12, 5, 7)}
    finally:
        sink.close()


# ---------------------------------------------------------------------------------------------
# check-config's sink check


def test_check_reports_what_it_will_create_and_creates_nothing(pipeline: Pipeline) -> None:
    (report,) = check(pipeline)
    assert "will be created" in report and "PostgreSQL" in report
    t = pipeline.sink.table
    assert _query(pipeline, f"SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '{t}%'") == [(0,)]
    PostgresSink(pipeline).close()
    assert "match and can be written" in check(pipeline)[0]


def test_check_names_a_down_server_and_the_fix(tmp_path: Path, table: str) -> None:
    from consumer.dev.postgres import free_port

    port = free_port()
    p = _pipeline(tmp_path, f"postgresql://someone:s3cret@127.0.0.1:{port}/stats", table)
    with pytest.raises(SinkError) as info:
        check(p)
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "database stats" in message and "sink.dsn" in message
    assert "Fix: start the server" in message
    assert "s3cret" not in message


def test_check_names_missing_privileges(postgres: Postgres, pipeline: Pipeline) -> None:
    PostgresSink(pipeline).close()
    role = f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        try:
            admin.execute(f"CREATE ROLE {role} LOGIN")
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("the test server's user may not create roles")
        try:
            params = psycopg.conninfo.conninfo_to_dict(postgres.dsn)
            params["user"] = role
            params.pop("password", None)
            dsn = psycopg.conninfo.make_conninfo(**params)
            other = _pipeline(Path(pipeline.source).parent, dsn, pipeline.sink.table, name="other.toml")
            with pytest.raises(SinkError, match=f"user {role} lacks SELECT on table '{pipeline.sink.table}'"):
                check(other)
            admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{pipeline.sink.table}" TO {role}')
            with pytest.raises(SinkError, match=f"lacks SELECT on table '{pipeline.sink.table}_positions'"):
                check(other)
            t = pipeline.sink.table
            for suffix in TABLE_SUFFIXES:
                admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{t}{suffix}" TO {role}')
            with pytest.raises(SinkError, match=f"lacks DELETE on table '{t}_checkpoints'") as info:
                check(other)  # flushes thin checkpoints and drop replay filters
            assert f"GRANT SELECT, INSERT, UPDATE, DELETE ON {t}_checkpoints TO {role}" in str(info.value)
            admin.execute(f'GRANT DELETE ON "{t}_checkpoints", "{t}_replay" TO {role}')
            assert "match and can be written" in check(other)[0]
        finally:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize(
    ("spec", "column"),
    [("distinct:user_id", "_sketch"), ({"kind": "quantiles", "field": "price_micros", "quantiles": [0.999]}, "_p99_9")],
)
def test_a_sketch_column_name_past_63_bytes_is_refused(tmp_path: Path, spec: Any, column: str) -> None:
    """The derived names count: a 58-byte metric name fits, its quantile or sketch column does not."""
    name = "m" * 58
    with pytest.raises(ConfigError) as info:
        _pipeline(tmp_path, None, "t", {"events": "count", name: spec})
    assert info.value.key == f"aggregate.metrics.{name}"
    assert f"'{name}{column}' is longer than PostgreSQL's 63-byte column names" in str(info.value)


def test_a_key_inserted_by_another_worker_meanwhile_is_merged(
    tmp_path: Path, postgres: Postgres, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sketches are merged in Python under row locks; a key without a row has none to lock. Worker
    A inserts key K and holds its transaction open; B finds no row for K, and its insert waits on
    A's. When A commits, B's insert does nothing, and B must read A's row, lock it and merge into
    it, in the same transaction: both workers' users are counted."""
    metrics = {"events": "count", "users": "distinct:user_id"}
    pipeline = _pipeline(tmp_path, postgres.dsn, table, metrics)
    a, b = PostgresSink(pipeline), PostgresSink(pipeline)
    update = compile_updater(["campaign_id", "event_type"], pipeline.aggregate.metrics)

    def partial(users: range) -> dict[Any, Any]:
        state: dict[Any, Any] = {}
        for u in users:
            update(state, 0, {"campaign_id": "c", "event_type": "click", "user_id": u})
        return state

    go, held = threading.Event(), threading.Event()
    real_reach = faults.reach

    def reach(point: str) -> None:  # A stops inside its transaction, after its insert, until told
        if point == "in_sink_transaction" and threading.current_thread().name == "a":
            held.set()
            go.wait(30)
        real_reach(point)

    monkeypatch.setattr(faults, "reach", reach)
    errors: list[BaseException] = []

    def write(sink: PostgresSink, users: range, partition: int) -> None:
        try:
            sink.write("g", partial(users), [PositionWrite(Position("ad-events", partition, 1, 0, 0, 0), None)], [])
        except BaseException as e:
            errors.append(e)

    first = threading.Thread(target=write, args=(a, range(0, 100), 0), name="a")
    first.start()
    assert held.wait(30)
    second = threading.Thread(target=write, args=(b, range(50, 150), 1), name="b")
    second.start()
    with psycopg.connect(postgres.dsn, autocommit=True) as db:  # B waits on A's uncommitted row
        deadline = time.monotonic() + 30
        while not db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the second insert never waited on the first"
            time.sleep(0.02)
    go.set()
    first.join(30)
    second.join(30)
    a.close()
    b.close()
    assert errors == []
    with psycopg.connect(postgres.dsn) as db:
        assert db.execute(f'SELECT events, users FROM "{table}"').fetchall() == [(200, 150)]
