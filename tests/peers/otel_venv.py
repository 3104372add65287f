"""The OpenTelemetry peer: the SDK with its OTLP/HTTP exporters, protobuf
(``opentelemetry-exporter-otlp-proto-http``) and JSON
(``opentelemetry-exporter-otlp-json-http``), in a venv of their own (the two
exporters need one line of the SDK, older than the newest's)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Final

from tests.peers.venvs import peer_python

PACKAGES: Final = [
    "opentelemetry-sdk==1.45.1",
    "opentelemetry-exporter-otlp-proto-http==1.45.1",
    "opentelemetry-exporter-otlp-json-http==0.66b1",
]
CONSTRAINTS: Final = Path(__file__).with_name("otel-constraints.txt")
SCRIPT: Final = Path(__file__).with_name("otel_export.py")


def export(job: dict[str, Any]) -> dict[str, Any]:
    """Run one export job (see otel_export.py) with the real SDK."""
    python = peer_python("otel-1.45.1", PACKAGES, CONSTRAINTS)
    out = subprocess.run(
        [str(python), str(SCRIPT)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
