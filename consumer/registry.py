"""Writer schemas by reference from a schema registry, and the framing of values that name them.

A framed value is a header naming its writer schema, then the Avro body. Two registries:

- Confluent-compatible REST APIs (Confluent, Apicurio's ccompat API, Karapace, Redpanda): the
  byte ``0x00``, the schema id as a 4-byte big-endian integer, then the body.
- AWS Glue Schema Registry (:mod:`consumer.glue`): the byte ``3``, a compression byte (``0`` none,
  ``5`` zlib), the schema version's 16-byte UUID, then the (possibly compressed) body.

A registry answers three ways, and the worker treats them differently (docs/design.md,
Decoding): a schema (cached for the worker's life: a schema id never changes its schema), "no
such schema" (:class:`UnknownSchema`: the message's fault, a dead letter), or nothing
(:class:`RegistryUnavailable`: not the message's fault; the worker pauses and retries).
"""

import json
import logging
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from .errors import EventfleetError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER = struct.Struct(">bI")  # magic byte, schema id
AVRO_CONTENT = "application/vnd.schemaregistry.v1+json"


class RegistryUnavailable(EventfleetError):
    """The registry did not answer (down, slow, 5xx, throttled, refused credentials): not the
    message's fault. The worker pauses its partitions and retries."""


class UnknownSchema(ValueError):
    """The registry answered that it has no such schema (or subject): the message's fault."""


class BadFrame(ValueError):
    """A value that does not start with the registry's header (wrong magic byte, too short,
    an unknown compression): the message's fault."""


class Registry(Protocol):
    """What the worker, ``produce`` and ``check-config`` need of a schema registry."""

    header_size: int  # bytes of the header that names the writer schema, before the body
    requests: int  # requests sent to the registry so far (for tests and metrics)

    def parse_header(self, header: bytes) -> tuple[Hashable, bool]:
        """The schema reference in a value's first ``header_size`` bytes, and whether the body
        after them is zlib-compressed; raises :class:`BadFrame`."""
        ...

    def writer_schema(self, ref: Hashable) -> dict[str, Any]:
        """The schema (parsed JSON) a reference names; raises :class:`UnknownSchema` or
        :class:`RegistryUnavailable`. Not cached here: the decoder caches per reference."""
        ...

    def latest(self, subject: str) -> tuple[Hashable, dict[str, Any]]:
        """The latest version of a subject: its reference and schema; raises :class:`UnknownSchema`
        when the subject does not exist, or :class:`RegistryUnavailable`."""
        ...

    def register(self, subject: str, schema: dict[str, Any]) -> Hashable:
        """Register ``schema`` under ``subject`` (an existing identical version is reused) and
        return its reference; raises :class:`RegistryUnavailable` (or EventfleetError when the
        registry refuses the schema, e.g. as incompatible)."""
        ...

    def frame(self, ref: Hashable, body: bytes) -> bytes:
        """A value of the schema ``ref`` names: the header, then ``body``."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RegistrySettings:
    """[schema] registry settings (config.py checks them)."""

    url: str  # a Confluent-compatible base URL, or "glue"
    subject: str | None = None  # None: "<topic>-value"
    username: str | None = None
    password: str | None = None
    token: str | None = None  # a bearer token
    ca_file: Path | None = None
    region: str | None = None  # glue: the AWS region (default: the SDK's)
    endpoint_url: str | None = None  # glue: another endpoint (a local test server)
    registry_name: str = "default-registry"  # glue: where `produce` registers schemas

    @property
    def is_glue(self) -> bool:
        return self.url == "glue"

    def subject_for(self, topic: str) -> str:
        """The subject of a topic's values (TopicNameStrategy unless ``subject`` is set)."""
        return self.subject or f"{topic}-value"


GLUE_HEADER_SIZE = 18  # header version, compression, the schema version's UUID


def header_size(settings: RegistrySettings) -> int:
    """The bytes before the Avro body in a value framed for this registry."""
    return GLUE_HEADER_SIZE if settings.is_glue else CONFLUENT_HEADER.size


def connect(settings: RegistrySettings) -> Registry:
    """The registry client for ``settings`` (no request is sent yet)."""
    if settings.is_glue:
        from .glue import GlueRegistry  # boto3 is imported only by pipelines that use Glue

        return GlueRegistry(settings)
    return ConfluentRegistry(settings)


def parse_confluent_header(header: bytes) -> int:
    """The schema id of Confluent's wire format (magic byte 0, a big-endian 4-byte id)."""
    if len(header) < CONFLUENT_HEADER.size:
        raise BadFrame(f"{len(header)} bytes: too short for the schema registry's 5-byte header")
    magic, schema_id = CONFLUENT_HEADER.unpack(header[: CONFLUENT_HEADER.size])
    if magic != CONFLUENT_MAGIC:
        raise BadFrame(f"magic byte {magic & 0xFF} where the schema registry's wire format has 0")
    return int(schema_id)


class ConfluentRegistry:
    """A Confluent-compatible registry's REST API (``/schemas/ids/{id}``, ``/subjects/...``)."""

    header_size = CONFLUENT_HEADER.size

    def __init__(self, settings: RegistrySettings) -> None:
        self.url = settings.url.rstrip("/")
        self.requests = 0
        headers = {"Accept": AVRO_CONTENT}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        auth = (settings.username, settings.password or "") if settings.username else None
        verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        self.client = httpx.Client(headers=headers, auth=auth, verify=verify, timeout=REQUEST_TIMEOUT_S)

    def parse_header(self, header: bytes) -> tuple[Hashable, bool]:
        return parse_confluent_header(header), False

    def writer_schema(self, ref: Hashable) -> dict[str, Any]:
        body = self._get(f"/schemas/ids/{ref}", f"schema id {ref}")
        return _avro_schema(body, f"schema id {ref}")

    def latest(self, subject: str) -> tuple[Hashable, dict[str, Any]]:
        body = self._get(f"/subjects/{_quote(subject)}/versions/latest", f"subject {subject!r}")
        return int(body["id"]), _avro_schema(body, f"subject {subject!r}")

    def register(self, subject: str, schema: dict[str, Any]) -> Hashable:
        payload = {"schema": json.dumps(schema), "schemaType": "AVRO"}
        response = self._send("POST", f"/subjects/{_quote(subject)}/versions", json=payload)
        if response.status_code >= 400:
            raise EventfleetError(f"the schema registry at {self.url} refused the schema for subject "
                                  f"{subject!r}: {_reason(response)}")  # fmt: skip
        return int(response.json()["id"])

    def frame(self, ref: Hashable, body: bytes) -> bytes:
        assert isinstance(ref, int)
        return CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, ref) + body

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, what: str) -> dict[str, Any]:
        response = self._send("GET", path)
        if response.status_code == 404:
            raise UnknownSchema(f"the schema registry at {self.url} has no {what}")
        if response.status_code >= 400:
            raise RegistryUnavailable(f"the schema registry at {self.url} answered {_reason(response)} for {what}")
        data = response.json()
        if not isinstance(data, dict):
            raise RegistryUnavailable(f"the schema registry at {self.url} answered {data!r} for {what}")
        return data

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        try:
            response = self.client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"cannot reach the schema registry at {self.url}: {e or type(e).__name__}") from e
        if response.status_code in (401, 403):
            raise RegistryUnavailable(
                f"the schema registry at {self.url} refused the credentials ({_reason(response)}): check "
                "[schema] username/password or token"
            )
        return response


def _avro_schema(body: dict[str, Any], what: str) -> dict[str, Any]:
    kind = body.get("schemaType", "AVRO")
    if kind != "AVRO":
        raise UnknownSchema(f"{what} is a {kind} schema, not Avro")
    try:
        schema = json.loads(body["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise UnknownSchema(f"{what}: the registry's answer holds no schema ({e})") from None
    if not isinstance(schema, dict):
        raise UnknownSchema(f"{what} is not an Avro record schema")
    return schema


def _quote(subject: str) -> str:
    return httpx.URL("/" + subject).raw_path.decode()[1:].replace("/", "%2F")


def _reason(response: httpx.Response) -> str:
    try:
        message = response.json().get("message")
    except ValueError:
        message = response.text[:200]
    return f"HTTP {response.status_code}" + (f" ({message})" if message else "")
