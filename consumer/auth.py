"""How the Kafka clients authenticate: ``[kafka] auth`` and ``tls`` to librdkafka settings.

Every client the pipeline creates (the consumer, the dead-letter producer, the admin clients of
the preflight checks, ``eventfleet produce``) takes these settings from
``KafkaSettings.client_settings()``, so one key in the pipeline file covers them all.

- ``msk-iam``: Amazon MSK's IAM access control over SASL/OAUTHBEARER. The token is a SigV4-signed
  ``kafka-cluster:Connect`` request made with the process's AWS credentials (the default chain:
  the ECS task role, environment variables, a profile...), by aws-msk-iam-sasl-signer-python.
  librdkafka asks ``oauth_cb`` for a token before it connects and again before the current one
  expires, so a role's rotating credentials are picked up without a restart.
- ``scram-sha-256`` / ``scram-sha-512``: SASL/SCRAM with a username and password.
- ``tls``: encryption in transit (on by default with SASL), ``ca_file`` to trust a private CA.
"""

import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

AUTH_MODES = ("none", "msk-iam", "scram-sha-256", "scram-sha-512")
SIGNER_PACKAGE = "aws_msk_iam_sasl_signer"
INSTALL_HINT = "pip install 'eventfleet[msk]'"
# From 2.13 the Python client serves oauth_cb from a background thread for every client type;
# before, an AdminClient never asked for a token unless polled, and its metadata requests hung.
MIN_CONFLUENT_KAFKA_FOR_OAUTH = (2, 13)
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


def security_settings(
    auth: str, tls: bool, username: str | None, password: str | None, ca_file: str | None
) -> dict[str, Any]:
    """The librdkafka keys that ``auth`` and ``tls`` stand for (the token callback excepted)."""
    settings: dict[str, Any] = {}
    if auth == "none":
        if tls:
            settings["security.protocol"] = "SSL"
    else:
        settings["security.protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
    if auth == "msk-iam":
        settings["sasl.mechanisms"] = "OAUTHBEARER"
    elif auth.startswith("scram-"):
        settings["sasl.mechanisms"] = auth.upper()
        settings["sasl.username"] = username
        settings["sasl.password"] = password
    if ca_file is not None:
        settings["ssl.ca.location"] = ca_file
    return settings


def region_from_env() -> str | None:
    """The AWS region the SDKs would use: $AWS_REGION, then $AWS_DEFAULT_REGION."""
    for name in REGION_ENV:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def check_msk_iam_available() -> None:
    """Fail at configuration time, with the fix, when MSK IAM cannot work in this install."""
    if importlib.util.find_spec(SIGNER_PACKAGE) is None:
        raise ConfigError(
            "kafka.auth",
            'auth = "msk-iam" needs the aws-msk-iam-sasl-signer-python package, which is not installed',
            INSTALL_HINT,
        )
    installed = importlib.metadata.version("confluent-kafka")
    parts = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
    if parts < MIN_CONFLUENT_KAFKA_FOR_OAUTH:
        need = ".".join(map(str, MIN_CONFLUENT_KAFKA_FOR_OAUTH))
        raise ConfigError(
            "kafka.auth",
            f'auth = "msk-iam" needs confluent-kafka >= {need} (installed: {installed})',
            INSTALL_HINT,
        )


class MskIamToken:
    """The ``oauth_cb`` of every client: a fresh MSK IAM token for ``region`` on each call.

    librdkafka calls it (from a background thread) before the first connection and again at
    80% of the previous token's lifetime; it wants the token and its expiry in epoch seconds.
    """

    def __init__(self, region: str, generate: Callable[[str], tuple[str, int]] | None = None) -> None:
        self.region = region
        if generate is None:
            try:
                from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
            except ImportError as e:
                raise ConfigError(
                    "kafka.auth", f'auth = "msk-iam" cannot load its signer ({e})', INSTALL_HINT
                ) from None
            generate = MSKAuthTokenProvider.generate_auth_token
        self._generate = generate

    def __call__(self, _oauthbearer_config: str | None) -> tuple[str, float]:
        try:
            token, expiry_ms = self._generate(self.region)
        except Exception:
            # librdkafka only sees that the token failed; the cause (no credentials, no role) is here.
            log.exception(
                "cannot sign an MSK IAM token for region %s: are AWS credentials available to this process?",
                self.region,
            )
            raise
        log.debug("new MSK IAM token for region %s, expires at %d ms", self.region, expiry_ms)
        return token, expiry_ms / 1000.0
