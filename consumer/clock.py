"""Time as the worker reads it, handed in so that tests can move it by hand (consumer/testing.py)."""

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds for intervals and deadlines (flushes, backoff, outages)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch, compared with the messages' timestamps."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
