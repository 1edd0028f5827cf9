"""AWS Glue Schema Registry: writer schemas by schema version UUID, fetched with boto3.

Glue's wire format, as its serializers write it (AWS's Java SerDe, the ``aws-glue-schema-registry``
Python package): the byte ``3``, a compression byte (``0`` none, ``5`` the body is zlib-compressed),
the writer schema version's 16-byte UUID, then the Avro body. The schema version's UUID names its
definition for ever, like a Confluent schema id.

Requests are signed with the SDK's default credential chain: the ECS task role or the pod's IRSA
role on AWS, ``AWS_PROFILE`` or ``AWS_ACCESS_KEY_ID`` elsewhere. Reading needs
``glue:GetSchemaVersion`` only; ``register`` (``eventfleet produce``) also creates schemas and
versions. The region is ``[schema] region``, else the SDK's (``AWS_REGION``, the profile).
"""

import json
import logging
import re
import struct
import time
import uuid
import zlib
from collections.abc import Hashable
from typing import Any

from .errors import EventfleetError
from .registry import (
    REQUEST_TIMEOUT_S,
    BadFrame,
    RegistrySettings,
    RegistryUnavailable,
    UnknownSchema,
    _avro_schema,
)

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as e:  # the glue extra is not installed
    raise EventfleetError(f'[schema] registry = "glue" needs boto3 ({e}): pip install "eventfleet[glue]"') from None

log = logging.getLogger(__name__)

GLUE_MAGIC = 3
COMPRESSION_NONE = 0
COMPRESSION_ZLIB = 5
GLUE_HEADER = struct.Struct(">BB16s")  # header byte, compression byte, schema version UUID: 18 bytes
DEFAULT_REGISTRY = "default-registry"  # Glue creates it on the first schema created without a registry
# One retry inside each API call, then the caller decides: the worker pauses and retries with its own
# backoff, so a registry that is down costs a call at most ~2 x REQUEST_TIMEOUT_S, never minutes.
MAX_ATTEMPTS = 2
AVAILABLE_WAIT_S = 30.0  # how long `register` waits for a new version's compatibility check
AVAILABLE_POLL_S = 0.5
COMPATIBILITY = "BACKWARD"  # of schemas `register` creates: see GlueRegistry.register

# Codes that say the caller's credentials or role were refused. Every code but EntityNotFoundException
# (and those a call names) means the registry could not answer now: not the message's fault.
CREDENTIAL_CODES = frozenset({
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
})  # fmt: skip


def parse_header(header: bytes) -> tuple[uuid.UUID, bool]:
    """The schema version UUID in a Glue-framed value's first 18 bytes, and whether the body after
    them is zlib-compressed; raises :class:`BadFrame`."""
    if len(header) < GLUE_HEADER.size:
        raise BadFrame(f"{len(header)} bytes: too short for the Glue schema registry's 18-byte header")
    magic, compression, version = GLUE_HEADER.unpack_from(header)
    if magic != GLUE_MAGIC:
        raise BadFrame(f"header byte {magic} where the Glue schema registry's wire format has 3")
    if compression not in (COMPRESSION_NONE, COMPRESSION_ZLIB):
        raise BadFrame(f"compression byte {compression}: the Glue wire format has 0 (none) or 5 (zlib)")
    return uuid.UUID(bytes=version), compression == COMPRESSION_ZLIB


def encode(version: uuid.UUID, body: bytes, *, compress: bool = False) -> bytes:
    """A Glue-framed value: the header naming schema version ``version``, then ``body``, zlib-compressed
    with ``compress`` (as the AWS serializers do with compression enabled)."""
    if compress:
        return GLUE_HEADER.pack(GLUE_MAGIC, COMPRESSION_ZLIB, version.bytes) + zlib.compress(body)
    return GLUE_HEADER.pack(GLUE_MAGIC, COMPRESSION_NONE, version.bytes) + body


class GlueRegistry:
    """The :class:`~consumer.registry.Registry` of an AWS Glue Schema Registry."""

    header_size = GLUE_HEADER.size

    def __init__(self, settings: RegistrySettings, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.registry_name = settings.registry_name
        self.requests = 0
        config = botocore.config.Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            user_agent_extra="eventfleet",
        )
        try:  # a session of its own: boto3's default session is not safe to share between threads
            self.client: Any = boto3.session.Session().client(
                "glue", region_name=settings.region, endpoint_url=settings.endpoint_url, config=config
            )
        except botocore.exceptions.NoRegionError:
            raise EventfleetError(
                "no AWS region for the Glue schema registry: set [schema] region, or AWS_REGION"
            ) from None
        except (ValueError, botocore.exceptions.BotoCoreError) as e:
            raise EventfleetError(f"cannot set up the Glue schema registry client: {e}") from None
        self.where = f"the Glue schema registry at {self.client.meta.endpoint_url}"

    def parse_header(self, header: bytes) -> tuple[Hashable, bool]:
        return parse_header(header)

    def writer_schema(self, ref: Hashable) -> dict[str, Any]:
        what = f"schema version {ref}"
        answer = self._call("get_schema_version", what, unknown={"InvalidInputException"}, SchemaVersionId=str(ref))
        return _definition(answer, what)

    def latest(self, subject: str) -> tuple[Hashable, dict[str, Any]]:
        what = f"schema {subject!r} in registry {self.registry_name!r}"
        answer = self._call(
            "get_schema_version",
            what,
            unknown={"InvalidInputException"},
            SchemaId=self._schema_id(subject),
            SchemaVersionNumber={"LatestVersion": True},
        )
        return uuid.UUID(answer["SchemaVersionId"]), _definition(answer, what)

    def register(self, subject: str, schema: dict[str, Any]) -> Hashable:
        """The version of ``subject`` (the Glue schema name) whose definition is ``schema``: an
        identical existing version, else a new version, else a new schema.

        A schema created here gets BACKWARD compatibility, Glue's default and its serializers': a
        new version must read the previous version's data, so Glue refuses a field removed without
        a default or a type narrowed, and accepts what eventfleet resolves (fields added with
        defaults, reordered, int widened to long). An existing schema keeps its own setting.
        """
        definition = json.dumps(schema)
        what = f"schema {subject!r} in registry {self.registry_name!r}"
        try:
            found = self._call(
                "get_schema_by_definition", what, SchemaId=self._schema_id(subject), SchemaDefinition=definition
            )
            version, status = uuid.UUID(found["SchemaVersionId"]), found["Status"]
        except UnknownSchema:  # no such schema, or no version with this definition
            version, status = self._add(subject, definition, what)
        self._wait_available(version, status, what)
        return version

    def frame(self, ref: Hashable, body: bytes) -> bytes:
        assert isinstance(ref, uuid.UUID)
        return encode(ref, body)

    def close(self) -> None:
        self.client.close()

    def _schema_id(self, subject: str) -> dict[str, str]:
        return {"RegistryName": self.registry_name, "SchemaName": subject}

    def _add(self, subject: str, definition: str, what: str, *, race: bool = True) -> tuple[uuid.UUID, str]:
        """A new version of ``subject``, or a new schema when it has none."""
        refusals = {"InvalidInputException", "ResourceNumberLimitExceededException", "AlreadyExistsException"}
        try:
            try:
                added = self._call(
                    "register_schema_version", what, refused=refusals,
                    SchemaId=self._schema_id(subject), SchemaDefinition=definition,
                )  # fmt: skip
                log.info("registered version %s of %s", added["SchemaVersionId"], what)
                return uuid.UUID(added["SchemaVersionId"]), added["Status"]
            except UnknownSchema:
                pass  # the schema does not exist yet
            create: dict[str, Any] = {
                "SchemaName": subject, "DataFormat": "AVRO", "Compatibility": COMPATIBILITY,
                "SchemaDefinition": definition,
            }  # fmt: skip
            if self.registry_name != DEFAULT_REGISTRY:  # without RegistryId, Glue creates its default registry
                create["RegistryId"] = {"RegistryName": self.registry_name}
            try:
                created = self._call("create_schema", what, refused=refusals, **create)
            except UnknownSchema:
                raise EventfleetError(
                    f"{self.where} has no registry {self.registry_name!r}: create it, or set [schema] registry_name"
                ) from None
            log.info("created %s (compatibility %s), version %s", what, COMPATIBILITY, created["SchemaVersionId"])
            return uuid.UUID(created["SchemaVersionId"]), created["SchemaVersionStatus"]
        except botocore.exceptions.ClientError as e:
            if _code(e) == "AlreadyExistsException" and race:  # another producer created the schema meanwhile
                return self._add(subject, definition, what, race=False)
            raise EventfleetError(f"{self.where} refused the schema for {what}: {_reason(e)}") from None

    def _wait_available(self, version: uuid.UUID, status: str, what: str) -> None:
        """Wait until a new version passed Glue's compatibility check (PENDING -> AVAILABLE)."""
        deadline = time.monotonic() + AVAILABLE_WAIT_S
        while status == "PENDING" and time.monotonic() < deadline:
            time.sleep(AVAILABLE_POLL_S)  # Glue offers no way to wait for the check but to ask again
            status = self._call("get_schema_version", what, SchemaVersionId=str(version))["Status"]
        if status == "AVAILABLE":
            return
        if status == "PENDING":
            raise RegistryUnavailable(f"{self.where}: version {version} of {what} is still PENDING after "
                                      f"{AVAILABLE_WAIT_S:.0f} s")  # fmt: skip
        raise EventfleetError(
            f"{self.where} refused version {version} of {what} (status {status}): it is not compatible with "
            "the schema's earlier versions under the schema's compatibility setting"
        )

    def _call(
        self, operation: str, what: str, *, unknown: set[str] | None = None, refused: set[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """One Glue API call. EntityNotFoundException (and the codes in ``unknown``) raise
        UnknownSchema; the codes in ``refused`` are re-raised as they are for the caller; every other
        failure raises RegistryUnavailable: the registry could not answer, whoever's fault."""
        self.requests += 1
        try:
            answer: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return answer
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            if code == "EntityNotFoundException" or code in (unknown or ()):
                raise UnknownSchema(f"{self.where} has no {what} ({_reason(e)})") from None
            if code in (refused or ()):
                raise
            if code in CREDENTIAL_CODES or _status(e) in (401, 403):
                raise RegistryUnavailable(
                    f"{self.where} refused the credentials for {what} ({_reason(e)}): the role needs "
                    f"glue:{e.operation_name} (the Terraform module's glue_schema_registry grants it; for IRSA "
                    "see the Helm chart's README)"
                ) from None
            raise RegistryUnavailable(f"{self.where} answered {_reason(e)} for {what}") from None
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
        ) as e:
            raise RegistryUnavailable(
                f"no AWS credentials for {self.where} ({e}): run under a task role (ECS) or IRSA (EKS), or "
                "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ) from None
        except botocore.exceptions.BotoCoreError as e:  # connection refused, timeouts, TLS, DNS
            raise RegistryUnavailable(f"cannot reach {self.where}: {e}") from None


def _definition(answer: dict[str, Any], what: str) -> dict[str, Any]:
    data_format = answer.get("DataFormat", "AVRO")
    return _avro_schema({"schemaType": data_format, "schema": answer.get("SchemaDefinition")}, what)


def _code(e: botocore.exceptions.ClientError) -> str:
    code = str(e.response.get("Error", {}).get("Code", ""))
    if code.isdigit():  # an answer botocore could not parse (a proxy's page, an XML error): its status
        found = re.search(r"<Code>([^<]+)</Code>", str(e.response.get("Error", {}).get("Message", "")))
        return found[1] if found else code
    return code


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _reason(e: botocore.exceptions.ClientError) -> str:
    message = str(e.response.get("Error", {}).get("Message") or "")
    found = re.search(r"<Message>([^<]+)</Message>", message)
    message = " ".join((found[1] if found else message).split())[:300]
    return f"{_code(e) or 'HTTP'} (HTTP {_status(e)})" + (f": {message}" if message else "")
