"""What importing a command loads.

The supervisor sets PROMETHEUS_MULTIPROC_DIR after reading the pipeline and before the metrics
are declared, so nothing the pipeline's loader imports, nor building the command line's parser,
may import them. And the engine never loads the development services (consumer/dev): only their
commands, the demo and the tests do.
"""

import subprocess
import sys

import pytest


def _loaded(code: str) -> list[str]:
    """The consumer modules loaded after running ``code`` in a fresh interpreter."""
    code += "\nimport sys; print(' '.join(sorted(m for m in sys.modules if m.startswith('consumer'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_loading_a_pipeline_does_not_declare_the_metrics() -> None:
    loaded = _loaded("import consumer.commands, consumer.config, consumer.fleet")
    assert "consumer.config" in loaded and "consumer.metrics" not in loaded


def test_building_every_command_does_not_declare_the_metrics() -> None:
    loaded = _loaded("import consumer.commands; consumer.commands.parser()")
    assert "consumer.commands.demo" in loaded and "consumer.dev.kafka" in loaded  # every command was built
    assert "consumer.metrics" not in loaded


@pytest.mark.parametrize("argv", [["worker", "--config", "p.toml"], ["run", "--config", "p.toml", "--workers", "2"]])
def test_starting_a_worker_does_not_load_the_development_services(argv: list[str]) -> None:
    # what `eventfleet worker|run` imports before it reads the pipeline: its command, then the engine
    loaded = _loaded(f"from consumer.commands import parse; parse({argv!r}); import consumer.worker, consumer.fleet")
    assert f"consumer.commands.{argv[0]}" in loaded and "consumer.worker" in loaded
    assert not [m for m in loaded if m.startswith("consumer.dev")], loaded
    assert not [m for m in loaded if m.startswith("consumer.commands.") and m != f"consumer.commands.{argv[0]}"]
