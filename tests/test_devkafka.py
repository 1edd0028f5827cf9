"""The local broker's command lines (the broker itself is started in tests/integration)."""

from pathlib import Path

from consumer.dev import kafka as devkafka


def test_a_cluster_id_beginning_with_a_dash_stays_the_value_of_its_option() -> None:
    cmd = devkafka.format_command(["java"], Path("server.properties"), "-dIoXrUyQ9mO2fYkq0Xx5g")
    assert "--cluster-id=-dIoXrUyQ9mO2fYkq0Xx5g" in cmd
    assert "-dIoXrUyQ9mO2fYkq0Xx5g" not in cmd  # never a word of its own, which the tool takes for an option


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {devkafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
               for i in ids)  # fmt: skip
