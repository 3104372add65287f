"""OTLP/HTTP trace exports, protobuf or JSON, to plain spans.

Protobuf is read with the OpenTelemetry project's own message classes
(``opentelemetry-proto``). OTLP/JSON is not protobuf's JSON mapping: trace
and span ids are hex strings (not base64), 64-bit integers may be strings
and enums numbers, so it is walked here by the rules of the OTLP
specification. Either way a span keeps its ids (hex), times (Unix
nanoseconds), status, and its own, its scope's and its resource's
attributes as scalars (arrays of scalars kept as lists; nested maps
dropped: no usage attribute is one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Scalar = str | int | float | bool
Value = Scalar | list[Scalar]
STATUS_ERROR: Final = 2


class BadTraces(Exception):
    """Not an OTLP trace export."""


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Value] = field(default_factory=dict)
    resource: dict[str, Value] = field(default_factory=dict)
    scope: str = ""


class TooManySpans(BadTraces):
    """More spans than one request may hold."""


def decode(body: bytes, *, protobuf: bool, max_spans: int = 10_000) -> list[Span]:
    spans: list[Span] = []
    for span in _from_protobuf(body) if protobuf else _from_json(body):
        if len(spans) >= max_spans:
            raise TooManySpans(f"more than {max_spans} spans")
        spans.append(span)
    return spans


def response(protobuf: bool, rejected: int, message: str) -> tuple[bytes, str]:
    """The export response the exporters expect, in the request's encoding,
    with a partial success when spans were refused."""
    if protobuf:
        reply = ExportTraceServiceResponse()
        if rejected:
            reply.partial_success.rejected_spans = rejected
            reply.partial_success.error_message = message
        return reply.SerializeToString(), "application/x-protobuf"
    body: dict[str, Any] = {}
    if rejected:
        body["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return json.dumps(body).encode(), "application/json"


# --- protobuf ---------------------------------------------------------------


def _any(value: AnyValue) -> Value | None:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        items = [_any(v) for v in value.array_value.values]
        return [v for v in items if v is not None and not isinstance(v, list)]
    if kind in ("string_value", "bool_value", "int_value", "double_value"):
        scalar: Scalar = getattr(value, kind)
        return scalar
    return None


def _attrs(pairs: Any) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for kv in pairs:
        v = _any(kv.value)
        if v is not None:
            out[kv.key] = v
    return out


def _from_protobuf(body: bytes) -> Iterator[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise BadTraces(f"not an ExportTraceServiceRequest: {exc}") from None
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield Span(
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    name=s.name,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    status_code=int(s.status.code),
                    attributes=_attrs(s.attributes),
                    resource=resource,
                    scope=ss.scope.name,
                )


# --- JSON -------------------------------------------------------------------

_JSON_KINDS: Final = ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue")


def _json_any(value: object) -> Value | None:
    if not isinstance(value, Mapping):
        return None
    if "arrayValue" in value:
        items = (
            value["arrayValue"].get("values", [])
            if isinstance(value["arrayValue"], Mapping)
            else []
        )
        found = [_json_any(v) for v in items] if isinstance(items, list) else []
        return [v for v in found if v is not None and not isinstance(v, list)]
    if "intValue" in value:
        return _int(value["intValue"])
    if "doubleValue" in value:
        v = value["doubleValue"]
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        try:
            return float(v)
        except OverflowError:  # an integer beyond any double
            return None
    if "boolValue" in value:
        return value["boolValue"] if isinstance(value["boolValue"], bool) else None
    if "stringValue" in value:
        return value["stringValue"] if isinstance(value["stringValue"], str) else None
    return None


def _int(value: object) -> int | None:
    """An int64: a JSON number or a decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        return int(value)
    return None


def _json_attrs(pairs: object) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for kv in pairs if isinstance(pairs, list) else []:
        if isinstance(kv, Mapping) and isinstance(kv.get("key"), str):
            v = _json_any(kv.get("value"))
            if v is not None:
                out[kv["key"]] = v
    return out


def _hex_id(value: object, size: int) -> str:
    if isinstance(value, str) and len(value) == size * 2:
        try:
            bytes.fromhex(value)
        except ValueError:
            pass
        else:
            return value.lower()
    raise BadTraces(f"an id is {size * 2} hex digits in OTLP/JSON")


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise BadTraces(f"{key} must be an array")
    return value


def _from_json(body: bytes) -> Iterator[Span]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadTraces(f"not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise BadTraces("an export is a JSON object with resourceSpans")
    for rs in _list(doc, "resourceSpans"):
        if not isinstance(rs, Mapping):
            raise BadTraces("a resourceSpans entry is an object")
        res = rs.get("resource")
        resource = _json_attrs(res.get("attributes")) if isinstance(res, Mapping) else {}
        for ss in _list(rs, "scopeSpans"):
            if not isinstance(ss, Mapping):
                raise BadTraces("a scopeSpans entry is an object")
            scope = ss.get("scope")
            name = scope.get("name", "") if isinstance(scope, Mapping) else ""
            for s in _list(ss, "spans"):
                if not isinstance(s, Mapping):
                    raise BadTraces("a span is an object")
                status = s.get("status")
                code = _int(status.get("code")) if isinstance(status, Mapping) else 0
                if isinstance(status, Mapping) and status.get("code") == "STATUS_CODE_ERROR":
                    code = STATUS_ERROR
                span_name = s.get("name")
                yield Span(
                    trace_id=_hex_id(s.get("traceId"), 16),
                    span_id=_hex_id(s.get("spanId"), 8),
                    name=span_name if isinstance(span_name, str) else "",
                    start_ns=_int(s.get("startTimeUnixNano")) or 0,
                    end_ns=_int(s.get("endTimeUnixNano")) or 0,
                    status_code=code or 0,
                    attributes=_json_attrs(s.get("attributes")),
                    resource=resource,
                    scope=name if isinstance(name, str) else "",
                )
