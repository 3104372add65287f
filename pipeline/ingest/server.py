"""``finops ingest serve``: the HTTP front door for real producers.

Every request is read within its bound (413), must carry an ingest key
(``Authorization: Bearer fik_...``; 401) and a content type its door speaks
(415), and must parse as that door's format (400). Its items are then mapped
onto the usage contract (:mod:`pipeline.ingest.outcome`): if a key bound to
one tenant would publish another tenant's usage, the whole request is
refused (403) and nothing is published. Otherwise accepted events go to the
usage topic and refused items to the dead-letter topic and table, and the
answer, 200 with the counts, is sent only once the broker acknowledged every
one of them. When more events wait for the broker than the door holds, a
request gets 429 with Retry-After at once; when the broker does not
acknowledge in time, 503 (retrying is safe: event ids are stable and the
pipeline counts each once). On SIGTERM the server stops taking requests,
finishes those in flight and flushes before it exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from sqlalchemy import Engine

from pipeline.ingest import cloudevents, genai_spans, litellm_payload, otlp, usage_lines
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.body import BadEncoding, TooLarge, read_body
from pipeline.ingest.keys import IngestKey, KeyCache
from pipeline.ingest.mapping import MappingFile
from pipeline.ingest.outcome import Mapped
from pipeline.ingest.sink import IngestSink
from pipeline.settings import Settings
from pipeline.stream import live_metrics
from pipeline.stream.ack_batcher import BufferFull, NotAcknowledged

log = logging.getLogger(__name__)
RETRY_AFTER_S: Final = 1
MAX_REASONS: Final = 20
REQUESTS: Final = live_metrics.RequestMetrics("finops_ingest", "endpoint")
EVENTS: Final = Counter(
    "finops_ingest_events",
    "Items of answered requests, by endpoint and outcome (accepted, rejected)",
    ["endpoint", "outcome"],
)


class BadBody(Exception):
    """The body is not what its content type says."""


class TooMany(Exception):
    """The body holds more items than one request may."""


@dataclass(frozen=True)
class Door:
    name: str
    content_types: frozenset[str]
    # body, content type, a bound key's tenant -> what it maps to; raises
    # BadBody or TooMany
    map: Callable[[bytes, str, str | None], Mapped]


def _within_lines(body: bytes, max_items: int) -> None:
    """Refused before it is parsed: more lines than one request may hold."""
    if body.count(b"\n") >= max_items:
        raise TooMany(f"more than {max_items} lines")


def _json_items(body: bytes, max_items: int) -> list[object]:
    """A JSON array, one JSON object, or NDJSON lines of objects."""
    import json

    _within_lines(body, max_items)
    try:
        doc = json.loads(body)
    except RecursionError:
        raise BadBody("nested too deeply") from None
    except ValueError:
        try:
            return [json.loads(line) for line in body.splitlines() if line.strip()]
        except RecursionError:
            raise BadBody("nested too deeply") from None
        except ValueError as exc:
            raise BadBody(f"neither JSON nor NDJSON: {exc}") from None
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > max_items:
        raise TooMany(f"{len(items)} items, at most {max_items}")
    return items


def doors(mapping: MappingFile, attempts: Attempts, max_items: int = 10_000) -> dict[str, Door]:
    json_types = frozenset({"application/json", "application/x-ndjson", "application/jsonl"})

    def litellm(body: bytes, _: str, tenant: str | None) -> Mapped:
        items = _json_items(body, max_items)
        return litellm_payload.map_payloads(items, mapping.litellm, attempts, tenant)

    def traces(body: bytes, content_type: str, tenant: str | None) -> Mapped:
        protobuf = content_type == "application/x-protobuf"
        try:
            spans = otlp.decode(body, protobuf=protobuf, max_spans=max_items)
        except otlp.TooManySpans as exc:
            raise TooMany(str(exc)) from None
        except otlp.BadTraces as exc:
            raise BadBody(str(exc)) from None
        return genai_spans.map_spans(spans, mapping.otel, attempts, tenant)

    def events(body: bytes, content_type: str, tenant: str | None) -> Mapped:
        items = _json_items(body, max_items)
        batch = content_type == "application/cloudevents-batch+json"
        if batch and not body.lstrip().startswith(b"["):
            raise BadBody("a batch of CloudEvents is a JSON array")
        return cloudevents.map_events(items, mapping.openmeter, tenant)

    def usage(body: bytes, _: str, tenant: str | None) -> Mapped:
        _within_lines(body, max_items)
        return usage_lines.map_lines(body)

    return {
        "litellm": Door("litellm", json_types, litellm),
        "traces": Door("traces", frozenset({"application/x-protobuf", "application/json"}), traces),
        "events": Door(
            "events",
            frozenset(
                {
                    "application/cloudevents+json",
                    "application/cloudevents-batch+json",
                    "application/json",
                }
            ),
            events,
        ),
        "usage": Door("usage", json_types, usage),
    }


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(settings: Settings, kafka_url: str, engine: Engine, mapping: MappingFile) -> FastAPI:
    sink = IngestSink(settings, kafka_url, engine)
    keys = KeyCache(engine)
    registry = doors(mapping, Attempts(), settings.ingest_max_items)
    mapper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-map")
    loop = asyncio.get_running_loop

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sink.start()
        try:
            yield
        finally:
            await sink.stop()
            mapper.shutdown(wait=True)

    app = FastAPI(
        title="finops ingest",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def no_store(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.middleware("http")(REQUESTS)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if not sink.ready:
            return _problem(503, "not connected to the broker")
        if sink.batcher.failing:  # a load balancer sends producers elsewhere meanwhile
            return _problem(503, "the broker is not acknowledging; retrying")
        return JSONResponse({"status": "ready", "pending": sink.batcher.pending})

    async def authorize(request: Request) -> IngestKey | Response:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return _problem(401, "an ingest key is required", **{"WWW-Authenticate": "Bearer"})
        key = await asyncio.to_thread(keys.get, secret.strip())
        if key is None:
            return _problem(401, "unknown or revoked ingest key", **{"WWW-Authenticate": "Bearer"})
        return key

    async def serve(request: Request, door: Door) -> Response:
        key = await authorize(request)
        if isinstance(key, Response):
            return key
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in door.content_types:
            return _problem(415, f"{door.name} takes {', '.join(sorted(door.content_types))}")
        try:
            body = await read_body(
                request.stream(),
                request.headers.get("content-encoding"),
                request.headers.get("content-length"),
                settings.ingest_max_body_bytes,
            )
        except TooLarge as exc:
            return _problem(413, f"request body too large: {exc}")
        except BadEncoding as exc:
            return _problem(400, str(exc))
        try:
            # Off the event loop (health checks and other requests go on),
            # one body at a time (the attempt numbering is not shared).
            mapped = await loop().run_in_executor(mapper, door.map, body, content_type, key.tenant)
        except TooMany as exc:
            return _problem(413, f"too many items: {exc}")
        except BadBody as exc:
            return _problem(400, f"not a {door.name} body: {exc}")
        except Exception:  # a body no mapper foresaw: refused, logged, never a crash
            log.exception("ingest %s key=%d: a body could not be mapped", door.name, key.id)
            return _problem(400, f"not a {door.name} body: it could not be read")
        if key.tenant is not None and mapped.named_tenants() - {key.tenant}:
            return _problem(403, f"this key publishes tenant {key.tenant!r} only")
        if not sink.ready:
            return _problem(503, "not connected to the broker", **{"Retry-After": "5"})
        if len(mapped.lines) > sink.batcher.fits:
            return _problem(413, f"more events than the door holds ({sink.batcher.fits}): split it")
        try:
            # The events first: a full buffer refuses them before anything
            # is published, so a 429 published nothing.
            await sink.publish(mapped.lines)
            await sink.dead_letters(door.name, body, mapped.refused)
        except BufferFull:
            return _problem(
                429, "the broker is behind; retry", **{"Retry-After": str(RETRY_AFTER_S)}
            )
        except NotAcknowledged as exc:
            log.warning("ingest %s key=%d: %s", door.name, key.id, exc)
            return _problem(503, "the broker did not acknowledge in time; retry",
                            **{"Retry-After": "5"})  # fmt: skip
        endpoint = request.url.path
        EVENTS.labels(endpoint, "accepted").inc(len(mapped.lines))
        EVENTS.labels(endpoint, "rejected").inc(len(mapped.refused))
        log.info(
            "ingest %s key=%d accepted=%d refused=%d skipped=%d",
            door.name,
            key.id,
            len(mapped.lines),
            len(mapped.refused),
            mapped.skipped,
        )
        return JSONResponse(
            {
                "accepted": len(mapped.lines),
                "rejected": len(mapped.refused),
                "reasons": [
                    {"item": r.item, "reason": r.reason} for r in mapped.refused[:MAX_REASONS]
                ],
                "notes": sorted(mapped.notes),
            }
        )

    @app.post("/v1/litellm")
    async def litellm(request: Request) -> Response:
        return await serve(request, registry["litellm"])

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        return await serve(request, registry["traces"])

    @app.post("/v1/events")
    @app.post("/api/v1/events")  # OpenMeter's path: its clients need only a base URL
    async def events(request: Request) -> Response:
        return await serve(request, registry["events"])

    @app.post("/v1/usage")
    async def usage(request: Request) -> Response:
        return await serve(request, registry["usage"])

    return app


def serve(settings: Settings, kafka_url: str, engine: Engine, mapping: MappingFile,
          host: str, port: int) -> None:  # fmt: skip
    import uvicorn

    # One line per request (door, key id, counts) beside uvicorn's access log.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s %(message)s")
    live_metrics.serve(settings.metrics_port, settings.metrics_host)
    uvicorn.run(
        create_app(settings, kafka_url, engine, mapping),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.ingest_ack_timeout_s) + 5,
    )
