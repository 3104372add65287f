"""Run in the OpenTelemetry peer's venv (tests/peers/otel_venv.py): read one
JSON job from stdin and export its spans with the real SDK and its real
OTLP/HTTP exporter, protobuf or JSON, to the URL given.

A job: {"url", "encoding": "protobuf"|"json", "key", "gzip": bool,
"resource": {...}, "traces": [[{"name", "attributes", "error"}, ...], ...]}:
each trace is one parent span (no usage) holding the listed spans as
children, started in order."""

from __future__ import annotations

import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def exporter(job: dict) -> object:
    headers = {"Authorization": f"Bearer {job['key']}"}
    if job["encoding"] == "protobuf":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        gzip = Compression.Gzip if job.get("gzip") else Compression.NoCompression
        return OTLPSpanExporter(endpoint=job["url"], headers=headers, compression=gzip)
    from opentelemetry.exporter.otlp.common.http import Compression as JsonCompression
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as Json

    gzip = JsonCompression.GZIP if job.get("gzip") else JsonCompression.NONE
    return Json(endpoint=job["url"], headers=headers, compression=gzip)


def main() -> None:
    job = json.loads(sys.stdin.read())
    provider = TracerProvider(resource=Resource.create(job["resource"]))
    provider.add_span_processor(BatchSpanProcessor(exporter(job)))
    tracer = provider.get_tracer("finops.tests", "1.0")
    ids = []
    for trace in job["traces"]:
        with tracer.start_as_current_span("agent run") as parent:
            ids.append(format(parent.get_span_context().trace_id, "032x"))
            for span in trace:
                with tracer.start_as_current_span(span["name"], kind=SpanKind.CLIENT) as s:
                    s.set_attributes(span["attributes"])
                    if span.get("error"):
                        s.set_status(Status(StatusCode.ERROR, "upstream failed"))
    if not provider.force_flush(30_000):
        raise SystemExit("spans not exported in 30 s")
    provider.shutdown()
    print(json.dumps({"trace_ids": ids}))


if __name__ == "__main__":
    main()
