"""Before joining the group: can this process log in to Kafka at all?

A wrong password, an unknown user or a CA that did not sign the broker's certificate never heals
by retrying, yet librdkafka retries them forever and its metadata requests only time out with
"broker transport failure". :func:`check_access` asks for metadata with a short-lived admin
client and reads the client's error callback: an authentication or TLS handshake error stops
start-up at once with what failed and the fix.
"""

import logging
import re
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from .config import KafkaSettings
from .errors import EventfleetError

log = logging.getLogger(__name__)

ATTEMPT_S = 1.0  # one metadata request; the error callback is read between attempts


class AccessError(EventfleetError):
    """Kafka refused this client's credentials or its TLS handshake failed."""


def check_access(kafka: KafkaSettings, timeout_s: float) -> bool:
    """True once a broker answered a metadata request; False if none did within ``timeout_s``
    (unreachable: the caller says so). Raises :class:`AccessError` on the first authentication or
    TLS handshake error."""
    from confluent_kafka.admin import AdminClient

    errors: list[KafkaError] = []
    settings: dict[str, Any] = {
        **kafka.client_settings(),
        "error_cb": errors.append,
        "logger": log,
        "log_level": 0,  # quiet: the cause, if any, is reported below, once
    }
    admin = AdminClient(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=min(ATTEMPT_S, max(0.1, deadline - time.monotonic())))
            return True
        except KafkaException:
            pass
        admin.poll(0)  # serves error_cb
        for error in errors:
            _raise_if_refused(kafka, error)
        if time.monotonic() >= deadline:
            return False


def _raise_if_refused(kafka: KafkaSettings, error: KafkaError) -> None:
    servers = kafka.bootstrap_servers
    reason = _reason(error.str())
    if error.code() == KafkaError._AUTHENTICATION:
        user = kafka.security.get("sasl.username")
        who = f"user {user!r}" if user else "this client"
        raise AccessError(
            f"Kafka at {servers} refused the credentials of {who} ({reason}). Fix: correct kafka.username "
            "and kafka.password (a wrong password and an unknown user look the same to SCRAM), or create the "
            "user on the cluster"
        )
    if error.code() == KafkaError._SSL:
        hint = "set kafka.ca_file to the CA that signed the broker's certificate"
        if "certificate verify failed" not in reason:
            hint = "check that the listener at bootstrap_servers speaks TLS, and kafka.tls and kafka.ca_file"
        raise AccessError(f"the TLS handshake with Kafka at {servers} failed ({reason}). Fix: {hint}")


def _reason(text: str) -> str:
    """librdkafka's message without the broker prefix and the state suffix."""
    text = re.sub(r"^\S+://\S+?: ", "", text)
    text = re.sub(r" \(after \d+ms in state \w+\)$", "", text)
    return re.sub(r": verify that ssl\.ca\.location.*$", "", text)
