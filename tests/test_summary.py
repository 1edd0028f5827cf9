"""consumer/summary.py: the JSON a worker leaves when it stops, which the demo reads."""

import os
import time
from pathlib import Path

import pytest

from consumer import summary


def test_a_stopped_worker_leaves_its_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(summary.SUMMARY_DIR_ENV, str(tmp_path))
    now, wall = time.perf_counter(), time.time()
    summary.worker_stopped(3, 12_000, now - 4.0, now - 1.0)  # first batch 4 s ago, last 1 s ago
    summary.worker_stopped(1, 0, None, 0.0)  # a worker that never got an event
    first, second = summary.read(tmp_path)
    assert (first.worker_id, first.pid, first.events, first.first_event_at) == (1, os.getpid(), 0, None)
    assert first.events_per_s == 0.0
    assert (second.worker_id, second.events, second.active_s) == (3, 12_000, pytest.approx(3.0))
    assert second.first_event_at is not None and abs(second.first_event_at - (wall - 4.0)) < 0.5
    assert second.events_per_s == pytest.approx(4_000.0)
    pid = os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"worker-1-{pid}.json", f"worker-3-{pid}.json"]  # no .tmp


def test_no_folder_no_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(summary.SUMMARY_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    summary.worker_stopped(0, 10, time.perf_counter(), time.perf_counter())
    assert list(tmp_path.iterdir()) == []


def test_a_summary_that_cannot_be_written_does_not_stop_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(summary.SUMMARY_DIR_ENV, str(tmp_path / "missing"))
    summary.worker_stopped(0, 10, time.perf_counter(), time.perf_counter())
    assert "could not write the worker summary" in caplog.text
