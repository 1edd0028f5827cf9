"""What the Kafka clients say: librdkafka's log lines and errors, through Python logging.

Every client eventfleet creates takes :func:`client_hooks` (through
``KafkaSettings.client_settings()``), so nothing librdkafka says goes raw to stderr, outside the
log format (``--log-format json`` stays JSON):

- its log lines go to the ``consumer.librdkafka`` logger at debug (``-v`` shows them);
- a broker that cannot be reached is said once, as a warning, however many clients retry how
  often (librdkafka retries every 50 ms to 1 s, each time with an error and a log line), and once
  more when it is back, with how long it was away. "Back" is read from the clients' statistics:
  the broker's connection state is UP again, since ``stateage`` microseconds;
- an authentication or TLS failure is remembered (:func:`failure`), so that a start-up check can
  say so in one line instead of "cannot reach Kafka", and logged once as an error;
- any other client error is logged as an error, as before.
"""

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
librdkafka = logging.getLogger("consumer.librdkafka")

STATS_INTERVAL_MS = 5000  # how soon a broker's return is noticed (the statistics' period)
_ADDRESS = re.compile(r"^(?:[a-z_]+://)?([^/\s]+)/")  # "sasl_ssl://host:9096/1: ..." -> host:9096
_REASON = re.compile(r"failed: (.*?)(?: \(after \d+ms in state \w+\))?$")


@dataclass(frozen=True)
class Failure:
    """An authentication or TLS failure a client met: what kind, what librdkafka said, when."""

    kind: str  # "authentication" or "tls"
    detail: str
    at: float  # time.monotonic()


class _Lines:
    """librdkafka's ``logger``: every line at debug; what matters is said by the error callback."""

    def log(self, _level: int, fmt: str, *args: object) -> None:
        librdkafka.debug(fmt, *args)


class BrokerWatch:
    """Which brokers this process's clients cannot reach, since when; the last auth/TLS failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}  # host:port -> time.time() of the first failed connect
        self._failure: Failure | None = None
        self._checking = 0  # > 0 during a start-up check, which says what is wrong itself

    @contextmanager
    def checking(self) -> Iterator[None]:
        """A start-up check is under way: it reports an unreachable broker or a failed
        authentication itself, in one line, so nothing is logged meanwhile."""
        with self._lock:
            self._checking += 1
        try:
            yield
        finally:
            with self._lock:
                self._checking -= 1

    def on_error(self, error: Any) -> None:
        """librdkafka's ``error_cb`` (a KafkaError), called for every failed attempt."""
        from confluent_kafka import KafkaError

        code, text = error.code(), error.str()
        if code == KafkaError._AUTHENTICATION:
            self._failed("authentication", text)
        elif code == KafkaError._SSL or "SSL handshake failed" in text or "state SSL_HANDSHAKE" in text:
            self._failed("tls", text)
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._unreachable(text)
        elif code == KafkaError._ALL_BROKERS_DOWN:
            librdkafka.debug("%s", text)  # follows the transport errors that were said already
        else:
            log.error("Kafka client error: %s", error)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: a broker UP again that we said was unreachable is back."""
        if not self._down:
            return
        now = time.time()
        up_since: dict[str, float] = {}
        for broker in json.loads(stats_json).get("brokers", {}).values():
            address = broker.get("nodename")
            if broker.get("state") == "UP" and address in self._down:
                at = now - broker.get("stateage", 0) / 1e6
                up_since[address] = min(at, up_since.get(address, at))
        with self._lock:
            for address, at in up_since.items():
                since = self._down.pop(address, None)
                if since is not None:
                    away = max(0.0, at - since)
                    log.warning("Kafka broker %s is reachable again, after %.1f s away", address, away)
            if up_since:
                self._failure = None

    def failure(self, since: float) -> Failure | None:
        """The authentication or TLS failure met at or after ``since`` (time.monotonic()), if any."""
        failure = self._failure
        return failure if failure is not None and failure.at >= since else None

    def _unreachable(self, text: str) -> None:
        found = _ADDRESS.match(text)
        if found is None or ("Disconnected" in text and "failed" not in text):
            librdkafka.debug("%s", text)  # a dropped connection: reconnected at once, or a connect fails next
            return
        address = found.group(1)
        with self._lock:
            if address in self._down or self._checking:
                return
            self._down[address] = time.time()
        reason = _REASON.search(text)
        log.warning(
            "Kafka broker %s is unreachable (%s); retrying, and saying so once it is back",
            address,
            reason.group(1) if reason else text,
        )

    def _failed(self, kind: str, text: str) -> None:
        with self._lock:
            said = self._checking or (self._failure is not None and self._failure.kind == kind)
            self._failure = Failure(kind, text, time.monotonic())
        if not said:
            log.error("Kafka %s failed: %s", "authentication" if kind == "authentication" else "TLS handshake", text)


WATCH = BrokerWatch()
_LINES = _Lines()


def client_hooks(on_stats: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The settings that route a client's logs, errors and statistics through :data:`WATCH`;
    ``on_stats`` also receives the statistics (the consumer's lag)."""
    if on_stats is None:
        stats: Callable[[str], None] = WATCH.on_stats
    else:
        user = on_stats

        def stats(stats_json: str) -> None:
            WATCH.on_stats(stats_json)
            user(stats_json)

    return {
        "logger": _LINES,
        "error_cb": WATCH.on_error,
        "stats_cb": stats,
        "statistics.interval.ms": STATS_INTERVAL_MS,
    }
