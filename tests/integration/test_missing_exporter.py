"""A missing OTLP exporter package is named as such, with the pip package to install.

The runner runs in a subprocess whose ``sitecustomize`` makes
``opentelemetry.exporter.otlp`` unimportable, as on a machine without the
package (its entry points may still be registered by leftover metadata).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_runner import ROOT, _env

SHIM = textwrap.dedent("""
    import sys

    class _NoOtlpExporter:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.exporter.otlp" or name.startswith(
                    "opentelemetry.exporter.otlp."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoOtlpExporter())
""")


@pytest.mark.parametrize(("env", "package", "chosen_by"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
     "opentelemetry-exporter-otlp-proto-grpc", "OTEL_EXPORTER_OTLP_*ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "opentelemetry-exporter-otlp-proto-http", "OTEL_EXPORTER_OTLP_*ENDPOINT"),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, "opentelemetry-exporter-otlp-proto-grpc",
     "OTEL_TRACES_EXPORTER='otlp'"),
], ids=["endpoint-grpc", "endpoint-http", "traces-exporter"])
def test_missing_exporter_package_is_named(tmp_path: Path, env: dict[str, str], package: str,
                                           chosen_by: str) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SHIM)
    script = tmp_path / "program.py"
    script.write_text("print('program ran')\n")
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "run", str(script)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=_env(PYTHONPATH=str(shim), **env))
    assert proc.returncode == 2, proc.stderr
    assert "not installed" in proc.stderr and f"pip install {package}" in proc.stderr, proc.stderr
    assert chosen_by in proc.stderr, proc.stderr
    assert "is not valid" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "program ran" not in proc.stdout


def test_exporter_loads_without_the_shim(tmp_path: Path) -> None:
    """The same setup with the package importable gets past the check."""
    script = tmp_path / "program.py"
    script.write_text("print('program ran')\n")
    proc = subprocess.run([sys.executable, "-m", "otel_alloc", "run", "--shutdown-timeout",
                           "0.5", str(script)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=_env(OTEL_TRACES_EXPORTER="otlp",
                                                OTEL_METRICS_EXPORTER="none",
                                                OTEL_LOGS_EXPORTER="none",
                                                OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"))
    assert proc.returncode == 0, proc.stderr
    assert "program ran" in proc.stdout


def test_unregistered_otlp_exporter_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """No metadata at all (the package was never installed): the same message."""
    from otel_alloc.otel import providers

    monkeypatch.setattr(providers, "entry_points", lambda group: [])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    with pytest.raises(providers.MissingExporterError) as err:
        providers.load_exporter("logs", "otlp")
    assert err.value.package == "opentelemetry-exporter-otlp-proto-http"
    assert "pip install opentelemetry-exporter-otlp-proto-http" in str(err.value)
    assert "is not valid" not in str(err.value)
