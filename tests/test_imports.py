"""Import order: the supervisor sets PROMETHEUS_MULTIPROC_DIR after reading the pipeline and
before the metrics are declared, so nothing the pipeline's loader imports may import them."""

import subprocess
import sys


def test_loading_a_pipeline_does_not_declare_the_metrics() -> None:
    code = "import sys, consumer.cli, consumer.config, consumer.fleet; print('consumer.metrics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
