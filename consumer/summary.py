"""A worker's summary, written as JSON when it stops: what tools read instead of log lines.

A worker writes it only when ``$EVENTFLEET_SUMMARY_DIR`` names a folder (the demo sets it for its
fleet; the supervisor's workers inherit it), one file per worker process,
``worker-<id>-<pid>.json``: the events it processed and when its first and last batch came.
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUMMARY_DIR_ENV = "EVENTFLEET_SUMMARY_DIR"


@dataclass(frozen=True)
class WorkerSummary:
    worker_id: int
    pid: int
    events: int  # messages processed: aggregated, late or undecodable
    first_event_at: float | None  # epoch seconds when the first batch with events arrived (None: none did)
    active_s: float  # from the first batch with events to the end of the last

    @property
    def events_per_s(self) -> float:
        return self.events / self.active_s if self.active_s else 0.0


def worker_stopped(worker_id: int, events: int, first_event_at: float | None, last_event_at: float) -> None:
    """Write the summary of a worker that stopped (``*_event_at``: its ``time.perf_counter()``
    readings), if ``$EVENTFLEET_SUMMARY_DIR`` asks for one; a failure to write is only logged."""
    folder = os.environ.get(SUMMARY_DIR_ENV)
    if not folder:
        return
    first_wall = None if first_event_at is None else time.time() - (time.perf_counter() - first_event_at)
    active_s = last_event_at - (first_event_at or last_event_at)
    summary = WorkerSummary(worker_id, os.getpid(), events, first_wall, active_s)
    path = Path(folder) / f"worker-{worker_id}-{summary.pid}.json"
    try:
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(asdict(summary)))
        partial.replace(path)  # whole or absent: a reader never sees half a summary
    except OSError as e:
        log.warning("could not write the worker summary to %s: %s", path, e)


def read(folder: Path) -> list[WorkerSummary]:
    """Every worker summary in ``folder``, by worker id then pid."""
    summaries = [WorkerSummary(**json.loads(p.read_text())) for p in folder.glob("worker-*.json")]
    return sorted(summaries, key=lambda s: (s.worker_id, s.pid))
