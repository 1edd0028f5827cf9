"""Exponential backoff with jitter (tenacity's strategy), for loops that must keep running
between attempts: the supervisor's restarts and the worker's sink retries."""

from tenacity import RetryCallState, wait_exponential_jitter


def backoff_s(attempt: int, initial_s: float = 0.5, max_s: float = 30.0) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after ``attempt`` consecutive failures."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # only attempt_number is read
    state.attempt_number = attempt
    return float(wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)(state))
