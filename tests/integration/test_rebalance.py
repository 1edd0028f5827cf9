"""Rebalances at awkward moments, against the real broker and a real PostgreSQL.

The same case with SQLite, where the positions can still be read during the outage, is driven
deterministically in tests/test_worker_driven.py
(``test_a_revoke_during_a_sink_outage_drops_every_partial_and_the_new_owner_reads_them_again``).
"""

from pathlib import Path

import pytest

from ..conftest import Postgres
from .conftest import Kafka, Pipeline, assert_exact, generate, ground_truth, wait_for

pytestmark = pytest.mark.integration


def _log(p: Pipeline, i: int) -> str:
    return (p.workdir / f"worker-{i}.log").read_text(errors="replace")


def test_rebalance_during_a_sink_outage_hands_partitions_over_exactly(
    kafka: Kafka, pipeline, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A second worker joins while PostgreSQL is stopped: the first cannot flush before handing
    half of its partitions over, so it drops its partials and stays in the group; not even the
    positions can be read, so the partitions it keeps are rewound lazily, once the sink answers,
    and the new worker takes its partitions paused. Once the sink is back both resume, and the
    results are exact: nothing lost, nothing merged twice."""
    p = pipeline(partitions=8, flush="500ms", sink="postgres")
    postgres: Postgres = request.getfixturevalue("postgres")
    server = postgres.restartable()
    events = generate(150_000, 8, seed=31)
    producing = kafka.produce_in_background(p.topic, events, 25.0)
    first = p.start_worker()
    wait_for(lambda: len(p.positions()) == 8, 90, "the first worker to flush every partition")
    gate = tmp_path / "join"
    second = p.start_worker(fault=f"before_join@1:wait={gate}")  # opens its sink now, joins at the gate
    wait_for(lambda: "EVENTFLEET_FAULT: waiting at before_join" in _log(p, 1), 60, "the second worker's sink")
    server.stop("fast")
    try:
        wait_for(lambda: "partitions paused" in _log(p, 0), 60, "the first worker to see the outage")
        gate.touch()  # the second worker joins: half of the partitions move during the outage
        wait_for(lambda: "cannot flush before handing over 4 partitions" in _log(p, 0), 90, "the revoke")
        wait_for(lambda: "partitions assign: " in _log(p, 1), 60, "the second worker's assignment")
        assert "cannot read the sink's positions to rewind 4 partitions" in _log(p, 0)
        wait_for(lambda: "cannot read the positions of the new partitions" in _log(p, 1), 30, "the paused take")
        assert first.poll() is None and second.poll() is None, p.logs()[-3000:]
        assert producing.is_alive()  # events keep coming during the outage
    finally:
        server.start()
    wait_for(lambda: all("partitions resumed" in _log(p, i) for i in (0, 1)), 90, "both workers to resume")
    producing.join()
    ends = kafka.ends(p.topic)
    p.wait_caught_up(ends)
    assert first.poll() is None and second.poll() is None  # the first worker never left: same process
    assert p.stop_all() == [0, 0]
    logs = p.logs()
    assert "Traceback" not in logs and "rebalance callback" not in logs
    assert "rewound 4 partitions to the sink's positions" in _log(p, 0)
    assert "flushed" in _log(p, 1).split("partitions resumed")[-1]  # the new owner wrote its partitions
    assert_exact(p, ground_truth(events), ends)
