"""Progress on a terminal (a live bar) and anywhere else (a few plain lines)."""

import io
import os

from consumer.progress import Progress


def test_output_that_is_not_a_terminal_gets_a_line_per_tenth() -> None:
    out = io.StringIO()
    with Progress(100_000, "produce t", stream=out) as bar:
        for _ in range(100):
            bar.update(1000)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" events")[0] for line in lines] == [
        f"produce t: {n * 10_000:,} of 100,000" for n in range(1, 11)
    ]
    assert lines[-1].startswith("produce t: 100,000 of 100,000 events (100%) in ")


def test_a_step_that_ends_early_says_where_it_ended() -> None:
    out = io.StringIO()
    with Progress(1000, "replay", stream=out) as bar:
        bar.update(50)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("replay: 50 of 1,000 events (5%) in ")


def test_disabled_says_nothing() -> None:
    out = io.StringIO()
    with Progress(10, "x", enabled=False, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_terminal_gets_the_live_bar() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        with Progress(100_000, "produce t", stream=tty) as bar:
            for _ in range(10):
                bar.update(10_000)
        tty.flush()
    chunks = []
    while True:  # everything the bar wrote: the terminal side is closed, so the reads end (EIO)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "produce t: 100%" in shown
