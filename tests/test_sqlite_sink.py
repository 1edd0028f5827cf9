"""What the SQLite sink does on its own (the shared behaviour is the contract suite's,
tests/sinks/test_contract.py): WAL mode, workers opening one new file together, tables from
before replay upgraded in place, and check-config's look at the file."""

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from consumer.config import Pipeline, load
from consumer.errors import SinkError
from consumer.sinks import check_sink, open_sink
from consumer.sinks.sqlite import SqliteSink
from consumer.types import Position, PositionWrite

SCHEMA = Path(__file__).parents[1] / "schemas" / "ad_event.avsc"
SIZE = 60_000
TABLE = "ad_stats"
METRICS = {"events": "count", "spend": "sum:price_micros", "lo": "min:price_micros", "hi": "max:price_micros"}


def _pipeline(tmp_path: Path, metrics: dict[str, str] | None = None, name: str = "pipeline.toml") -> Pipeline:
    doc = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["ad-events"], "group_id": "g"},
        "schema": {"path": str(SCHEMA)},
        "window": {"size": "1m", "grace": "10s", "time_field": "ts"},
        "aggregate": {"group_by": ["campaign_id", "event_type"], "metrics": metrics or METRICS},
        "sink": {"type": "sqlite", "path": "sink.db", "table": TABLE},
    }
    path = tmp_path / name
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return load(path)


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    return _pipeline(tmp_path)


def test_the_file_is_in_wal_mode_for_readers_beside_the_writers(pipeline: Pipeline) -> None:
    SqliteSink(pipeline).close()
    with sqlite3.connect(pipeline.sink.path or "") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_tables_from_before_replay_get_the_new_tables(pipeline: Pipeline) -> None:
    """A file written before replay existed has four tables: opening it adds the other two and
    keeps the rows."""
    sink = SqliteSink(pipeline)
    sink.write("g", {(0, "c", "click"): [1, 5, 5, 5]}, [PositionWrite(Position("ad-events", 0, 1, 0), None)], [])
    sink.close()
    with sqlite3.connect(pipeline.sink.path or "") as db:
        db.execute(f'DROP TABLE "{TABLE}_checkpoints"')
        db.execute(f'DROP TABLE "{TABLE}_replay"')
    again = SqliteSink(pipeline)
    try:
        assert again.replay_table_exists(f"{TABLE}_checkpoints") and again.replay_table_exists(f"{TABLE}_replay")
        assert again.results()[1] == [(0, SIZE, "c", "click", 1, 5, 5, 5)]
    finally:
        again.close()


def test_check_says_whether_the_file_exists(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    assert "will be created" in "\n".join(check_sink(p))
    open_sink(p).close()
    assert "exists" in "\n".join(check_sink(p))


def _open_and_report(pipeline: Pipeline, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        SqliteSink(pipeline).close()
        results.put("ok")
    except SinkError as e:
        results.put(str(e))


def test_workers_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Workers of a fleet start at the same moment: switching a new file to WAL mode then
    failed at once with 'database is locked' (in about a third of the pairs), ignoring the
    busy timeout."""
    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for i in range(30):
        (tmp_path / str(i)).mkdir()
        pipeline = _pipeline(tmp_path / str(i))
        barrier, results = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_open_and_report, args=(pipeline, barrier, results)) for _ in range(3)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join()
    assert outcomes == ["ok"] * 90
