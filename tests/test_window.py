"""Unit tests of consumer.window: durations, tumbling windows and the lateness rule.

The rules are those of docs/design.md, "Events, windows, lateness".
"""

import random

import pytest

from consumer.window import NO_WATERMARK, is_late, parse_duration_ms, window_start

MINUTE = 60_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0ms", 0),
        ("1ms", 1),
        ("500ms", 500),
        ("1s", 1_000),
        ("30s", 30_000),
        ("1m", 60_000),
        ("15m", 900_000),
        ("1h", 3_600_000),
        ("2h", 7_200_000),
        ("48h", 172_800_000),
        ("007s", 7_000),
        (" 5s ", 5_000),
        ("5 s", 5_000),
        ("\t10 ms\n", 10),
        ("123456789ms", 123_456_789),
    ],
)
def test_parse_duration_ms_units(text: str, expected: int) -> None:
    assert parse_duration_ms(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "5",
        "s",
        "ms",
        "5x",
        "5d",
        "5S",
        "5MS",
        "5 sec",
        "5min",
        "-5s",
        "+5s",
        "1.5s",
        ".5s",
        "1e3ms",
        "1m30s",
        "5 m s",
        "s5",
        "5s5",
        "five s",
        "0x10ms",
    ],
)
def test_parse_duration_ms_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize("value", [None, 5, 5.0, b"5s", ["5s"], True])
def test_parse_duration_ms_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("t", "size", "expected"),
    [
        (0, MINUTE, 0),
        (1, MINUTE, 0),
        (59_999, MINUTE, 0),
        (60_000, MINUTE, 60_000),
        (60_001, MINUTE, 60_000),
        (1_700_000_000_123, MINUTE, 1_699_999_980_000),
        (-1, MINUTE, -60_000),
        (-59_999, MINUTE, -60_000),
        (-60_000, MINUTE, -60_000),
        (-60_001, MINUTE, -120_000),
        (7, 1, 7),
        (-7, 1, -7),
        (10, 3, 9),
        (-10, 3, -12),
    ],
)
def test_window_start_examples(t: int, size: int, expected: int) -> None:
    assert window_start(t, size) == expected


def test_window_start_random_matches_definition() -> None:
    """The start is the multiple of size with start <= t < start + size.

    (docs/design.md, "Events, windows, lateness")
    """
    rng = random.Random(1234)
    for _ in range(5_000):
        size = rng.choice([1, 7, 1_000, 60_000, 3_600_000, rng.randint(1, 10**7)])
        t = rng.randint(-(10**13), 10**13)
        ws = window_start(t, size)
        assert ws % size == 0
        assert ws <= t < ws + size


def test_window_start_every_ms_of_a_window_maps_to_it() -> None:
    size = 250
    for start in (-500, -250, 0, 250):
        assert {window_start(t, size) for t in range(start, start + size)} == {start}


@pytest.mark.parametrize("t", [0, 1, 30_000, 59_999])
def test_is_late_boundary(t: int) -> None:
    # window [0, 60000), grace 30s: closes when the watermark reaches 90000
    size, grace = MINUTE, 30_000
    assert is_late(t, size, grace, 90_000) is True
    assert is_late(t, size, grace, 89_999) is False
    assert is_late(t, size, grace, 90_001) is True
    assert is_late(t, size, grace, NO_WATERMARK) is False


def test_is_late_next_window_starts_fresh() -> None:
    size, grace = MINUTE, 30_000
    assert is_late(60_000, size, grace, 149_999) is False
    assert is_late(60_000, size, grace, 150_000) is True


def test_is_late_zero_grace() -> None:
    assert is_late(0, MINUTE, 0, 60_000) is True
    assert is_late(0, MINUTE, 0, 59_999) is False
    # an event at the watermark itself is never late, whatever the grace
    assert is_late(59_999, MINUTE, 0, 59_999) is False


def test_is_late_negative_times() -> None:
    # window [-60000, 0), grace 1s: closes when the watermark reaches 1000
    assert is_late(-1, MINUTE, 1_000, 1_000) is True
    assert is_late(-1, MINUTE, 1_000, 999) is False
    assert is_late(-60_000, MINUTE, 1_000, 1_000) is True
    assert is_late(-60_001, MINUTE, 1_000, -59_000) is True
    assert is_late(-60_001, MINUTE, 1_000, -59_001) is False


def test_is_late_random_against_plain_rule() -> None:
    rng = random.Random(99)
    for _ in range(5_000):
        size = rng.choice([1, 1_000, 60_000, rng.randint(1, 10**6)])
        grace = rng.choice([0, 1, 30_000, rng.randint(0, 10**6)])
        t = rng.randint(-(10**9), 10**9)
        # window end computed by brute description: the first multiple of size strictly above t
        end = (t // size + 1) * size
        closes_at = end + grace
        watermark = closes_at + rng.choice([-2, -1, 0, 1, 2, rng.randint(-(10**6), 10**6)])
        assert is_late(t, size, grace, watermark) == (watermark >= closes_at)
