"""On-demand sampling profile of a running worker: ``kill -USR2 <worker pid>``.

A thread samples the main thread's stack every ``SAMPLE_INTERVAL_S`` for
``$EVENTFLEET_PROFILE_SECONDS`` (default 30) and writes collapsed stacks (one
``frame;frame;frame count`` line per distinct stack) to
``$EVENTFLEET_PROFILE_DIR/eventfleet-<pid>-<time>.collapsed`` (default: the temp folder).
speedscope and flamegraph.pl open that format. ``py-spy dump``/``py-spy record`` work too.
"""

import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.005
_running = threading.Event()


def start(_signum: int = 0, _frame: FrameType | None = None) -> None:
    """Start one profile in the background (a second request while one runs is ignored)."""
    if _running.is_set():
        return
    _running.set()
    seconds = float(os.environ.get("EVENTFLEET_PROFILE_SECONDS", "30"))
    folder = Path(os.environ.get("EVENTFLEET_PROFILE_DIR") or tempfile.gettempdir())
    main_id = threading.main_thread().ident
    threading.Thread(target=_sample, args=(main_id, seconds, folder), name="profiler", daemon=True).start()


def _sample(thread_id: int | None, seconds: float, folder: Path) -> None:
    stacks: Counter[str] = Counter()
    log.info("profiling for %.0f s", seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(thread_id or 0)
            names = []
            while frame is not None:
                code = frame.f_code
                names.append(f"{Path(code.co_filename).name}:{code.co_name}")
                frame = frame.f_back
            if names:
                stacks[";".join(reversed(names))] += 1
            time.sleep(SAMPLE_INTERVAL_S)
        path = folder / f"eventfleet-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.collapsed"
        path.write_text("".join(f"{stack} {n}\n" for stack, n in stacks.most_common()))
        log.info("profile written to %s (%d samples)", path, sum(stacks.values()))
    finally:
        _running.clear()
