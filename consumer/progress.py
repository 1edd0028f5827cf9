"""Progress of a long step (produce, replay, the demo's catching up) on stderr.

On a terminal: a live tqdm bar (log lines are printed above it). Anywhere else (a CI log, a
file, a pipe), where a bar's carriage-return redraws would pile up as hundreds of lines: a plain
line at each tenth of the way, and at most every ``PLAIN_EVERY_S`` seconds between two tenths.
"""

import sys
import time
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TextIO

PLAIN_EVERY_S = 30.0  # a step slower than a tenth per this long still says it is alive


class Progress:
    """``with Progress(total, "produce t") as bar: bar.update(n)``; disabled: says nothing."""

    def __init__(self, total: int, desc: str, unit: str = "events", enabled: bool = True,
                 stream: TextIO | None = None) -> None:  # fmt: skip
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.n = 0
        self._bar: Any = None
        self._stack = ExitStack()
        self._enabled = enabled
        self._started = self._said_at = time.monotonic()
        self._said_tenth = 0
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            bar = tqdm(total=total, unit=" " + unit, unit_scale=True, desc=desc, file=self.stream, mininterval=0.5)
            self._bar = self._stack.enter_context(bar)
            self._stack.enter_context(logging_redirect_tqdm())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.close(done=kind is None)

    def update(self, n: int) -> None:
        """``n`` more of ``total`` done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled:
            tenth = min(10, self.n * 10 // max(self.total, 1))
            now = time.monotonic()
            if tenth > self._said_tenth or now - self._said_at >= PLAIN_EVERY_S:
                self._said_tenth, self._said_at = tenth, now
                self._say()

    def restart(self) -> None:
        """Count the rate and the time left from now (the first event, not the set-up before it)."""
        self._started = time.monotonic()
        if self._bar is not None:
            self._bar.reset(self.total)
            self._bar.update(self.n)

    def close(self, done: bool = True) -> None:
        if self._bar is None and self._enabled and done and self.total and self._said_tenth < 10:
            self._say()  # the last line says where it ended
        self._enabled = False
        self._stack.close()

    def _say(self) -> None:
        seconds = time.monotonic() - self._started
        rate = f", {self.n / seconds:,.0f} {self.unit}/s" if seconds > 0 else ""
        pct = f" ({100 * self.n // self.total}%)" if self.total else ""
        print(f"{self.desc}: {self.n:,} of {self.total:,} {self.unit}{pct} in {seconds:.1f} s{rate}",
              file=self.stream, flush=True)  # fmt: skip
