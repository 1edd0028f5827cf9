"""``eventfleet check-config``: validate a pipeline file, check that its sink (and registry) can
be used, and print what it computes per event."""

import argparse
from typing import Any

from .. import config
from ..aggregate import updater_source
from ..decode import ResolutionError, make_resolving_projection, projection_source
from ..errors import ConfigError, EventfleetError
from ..registry import RegistryUnavailable, UnknownSchema, connect, header_size
from ..sinks import check_sink


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)


def main(args: argparse.Namespace) -> int:
    pipeline = config.load(args.config)
    from ..source import check_consumer_settings  # declares the metrics: never on building the parser

    check_consumer_settings(pipeline)  # librdkafka's own checks of [kafka.config]
    sink_lines = check_sink(pipeline)  # connects: a sink the workers could not use is an error here
    writer, reader, start, registry_line = dict(pipeline.schema), None, 0, ""
    if pipeline.registry is not None:  # likewise a registry: checked before anything is said OK
        writer, registry_line = _check_registry(pipeline)
        reader, start = dict(pipeline.schema), header_size(pipeline.registry)
    print(f"{args.config}: OK")
    print(f"  reads {', '.join(pipeline.kafka.topics)} as group {pipeline.kafka.group_id}")
    window = pipeline.window
    every = f" starting every {window.step_ms} ms (hopping)" if window.hopping else ""
    print(f"  windows of {window.size_ms} ms{every}, grace {window.grace_ms} ms")
    where = f"topic {pipeline.sink.topic}" if pipeline.sink.type == "kafka" else f"table {pipeline.sink.table}"
    print(f"  writes {pipeline.sink.type} {where} ({', '.join(pipeline.column_types())})")
    for line in sink_lines:
        print(f"  sink: {line}")
    if registry_line:
        print(f"  registry: {registry_line}")
    fields = pipeline.event_fields()
    decoder = projection_source(writer, fields, reader, start)[0]
    updater = updater_source(pipeline.aggregate.group_by, pipeline.aggregate.metrics, fields)
    print(f"  per event it runs ({', '.join(fields)} as r[0], r[1], ...):\n{decoder}\n{updater}")
    return 0


def _check_registry(pipeline: config.Pipeline) -> tuple[dict[str, Any], str]:
    """The registry answers, the subject exists, and its latest version resolves to the fields
    the pipeline reads; returns that version's schema and a line saying so."""
    assert pipeline.registry is not None
    settings = pipeline.registry
    subject = settings.subject_for(pipeline.kafka.topics[0])
    client = connect(settings)
    try:
        ref, latest = client.latest(subject)
    except UnknownSchema as e:
        raise ConfigError("schema.subject", str(e), "register the schema (eventfleet produce does), or "
                                 "set subject to the topic's subject") from None  # fmt: skip
    except RegistryUnavailable as e:
        raise EventfleetError(f"{e}. Fix: start the registry (eventfleet registry up), or correct [schema] "
                              "registry and its credentials") from None  # fmt: skip
    finally:
        client.close()
    try:
        make_resolving_projection(latest, dict(pipeline.schema), pipeline.event_fields(), client.header_size)
    except ResolutionError as e:
        raise ConfigError("schema.subject", f"the latest version of {subject!r} (schema {ref}): {e}",
                                 "give the field a default in the reader schema, or fix the producer's "
                                 "schema") from None  # fmt: skip
    where = "AWS Glue" if settings.is_glue else settings.url
    return latest, f"{where}, subject {subject}: its latest version (schema {ref}) resolves to the fields read"
