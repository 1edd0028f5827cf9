"""Every error eventfleet raises on purpose derives from :class:`EventfleetError`.

A user-facing error says what happened, where (which key, file or partition) and what to do.
"""


class EventfleetError(Exception):
    """Base class of eventfleet's own errors."""


class ConfigError(EventfleetError):
    """The pipeline file is wrong; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str = "") -> None:
        self.key = key
        message = f"config error at '{key}': {problem}"
        if fix:
            message += f". Fix: {fix}"
        super().__init__(message)


class SinkError(EventfleetError):
    """The sink cannot be opened or written."""


class PositionConflict(SinkError):
    """Another worker moved a partition's position since this worker last read or wrote it.

    Raised by a sink's write, after it rolled the transaction back. ``partitions`` lists the
    (topic, partition) pairs whose stored position did not match.
    """

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        self.partitions = partitions
        names = ", ".join(f"{t}[{p}]" for t, p in partitions)
        super().__init__(f"positions moved by another worker: {names}")


class KafkaSetupError(EventfleetError):
    """The local development broker cannot be set up or started."""


def librdkafka_config_error(error: BaseException) -> ConfigError | None:
    """The ConfigError for a client librdkafka refused to create because of a setting of
    ``[kafka.config]`` (``KafkaException`` with ``_INVALID_ARG``), else None."""
    from confluent_kafka import KafkaError, KafkaException

    if not isinstance(error, KafkaException) or not error.args or not isinstance(error.args[0], KafkaError):
        return None
    if error.args[0].code() != KafkaError._INVALID_ARG:
        return None
    return ConfigError(
        "kafka.config", f"librdkafka refused it: {error.args[0].str()}",
        "correct or remove the setting (librdkafka's CONFIGURATION.md lists them and their limits)",
    )  # fmt: skip
