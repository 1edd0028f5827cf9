"""Event time to windows (tumbling, hopping), and the lateness rule (docs/design.md, "Events, windows,
lateness").

All times are integer epoch milliseconds.
"""

import re
import time

NO_WATERMARK = -(2**63)
"""The watermark of a partition that has seen no event yet (lower than any event time)."""

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)\s*$", re.ASCII)


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``"500ms"``, ``"30s"``, ``"1m"`` or ``"2h"`` into milliseconds.

    Raises ValueError with the accepted forms when the text is not one of them.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write a whole number and a unit: ms, s, m or h")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def window_start(t_ms: int, size_ms: int) -> int:
    """Start of the tumbling window ``[floor(t / size) * size, that + size)`` holding ``t_ms``."""
    return t_ms - t_ms % size_ms


def window_starts(t_ms: int, size_ms: int, step_ms: int) -> list[int]:
    """Starts of every hopping window ``[s, s + size)`` holding ``t_ms``, ``s`` a multiple of
    ``step_ms``, oldest first: ``size / step`` windows when the step divides the size (the config
    makes sure it does); ``[window_start(t_ms, size_ms)]`` when ``step_ms == size_ms``."""
    oldest = t_ms - size_ms  # exclusive: the smallest multiple of step above it is the first
    first = oldest - oldest % step_ms + step_ms
    return list(range(first, t_ms + 1, step_ms))


def window_is_late(start_ms: int, size_ms: int, grace_ms: int, watermark_ms: int) -> bool:
    """True when the window starting at ``start_ms`` has closed: ``window_end + grace <= watermark``.

    Hopping windows judge each window of an event apart by this rule: an event may be late for
    its oldest windows and on time for the newer ones. The generated fold
    (:func:`consumer.aggregate.compile_fold`) inlines it; this function is its reference statement.
    """
    return start_ms + size_ms + grace_ms <= watermark_ms


def is_late(t_ms: int, size_ms: int, grace_ms: int, watermark_ms: int) -> bool:
    """True when the tumbling window of ``t_ms`` has closed: ``window_end + grace <= watermark``.

    The worker inlines this rule in its hot loop; this function is its reference statement.
    """
    return window_is_late(window_start(t_ms, size_ms), size_ms, grace_ms, watermark_ms)


def iso(t_ms: int) -> str:
    """``t_ms`` as an ISO 8601 UTC time with milliseconds: ``2026-11-20T10:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ms // 1000)) + f".{t_ms % 1000:03d}Z"
