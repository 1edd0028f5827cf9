"""The [dlq] caps that stop a worker instead of draining a topic into the dead-letter queue."""

import pytest

from consumer.config import DlqSettings
from consumer.dlq import InvalidCaps, InvalidInputError


def test_no_caps_never_stop() -> None:
    caps = InvalidCaps(DlqSettings())
    for offset in range(10_000):
        caps.rejected("t", 0, offset)
    caps.check(10_000, 10_000)


def test_consecutive_cap_counts_a_run_per_partition() -> None:
    caps = InvalidCaps(DlqSettings(max_consecutive=3))
    for offset in (10, 11, 12):  # three in a row: at the cap, not past it
        caps.rejected("t", 0, offset)
    caps.rejected("t", 1, 11)  # another partition has its own run
    caps.rejected("t", 0, 14)  # offset 13 was valid: the run starts again
    caps.rejected("t", 0, 15)
    caps.rejected("t", 0, 16)
    with pytest.raises(InvalidInputError, match=r"4 invalid messages in a row in t\[0\] up to offset 17"):
        caps.rejected("t", 0, 17)


def test_ratio_cap_looks_at_the_last_window_of_messages() -> None:
    caps = InvalidCaps(DlqSettings(max_invalid_ratio=0.5, ratio_window=1000))
    caps.check(600, 500)  # fewer messages than the window: no verdict yet
    caps.check(600, 0)  # 500 of 1,200 invalid: under half
    for _ in range(20):  # healthy traffic pushes the bad batch out of the window
        caps.check(500, 10)
    with pytest.raises(InvalidInputError, match=r"dlq\.max_invalid_ratio = 0\.5"):
        for _ in range(3):
            caps.check(500, 400)


def test_consecutive_cap_counts_the_lines_of_a_file() -> None:
    caps = InvalidCaps(DlqSettings(max_consecutive=2))
    caps.rejected_in("/var/log/app.log", 7, "line")
    caps.rejected_in("/var/log/app.log", 8, "line")
    with pytest.raises(InvalidInputError, match=r"3 invalid lines in a row in /var/log/app\.log up to line 9"):
        caps.rejected_in("/var/log/app.log", 9, "line")
