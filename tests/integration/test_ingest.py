"""The front door through real parts: ``finops ingest serve`` as a user runs
it, the real broker and PostgreSQL, a worker draining what the door
published. Every door lands exactly, a CloudEvents batch sent twice counts
once, and hostile requests get their status and publish nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from pipeline.stream.kafka import end_offsets
from tests import reference
from tests.factories import event, line
from tests.integration.conftest import Env
from tests.integration.ingest_door import running_door

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "ingest"
NDJSON = "application/x-ndjson"
PRICES = reference.parse_prices(
    resources.files("models").joinpath("data/default_prices.csv").read_text()
)
SUMS = "sum(attempts), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens)," \
       " sum(cache_write_tokens), sum(cost_usd)"  # fmt: skip


def spend(env: Env) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    rows = env.query(f"SELECT tenant, route, feature, {SUMS} FROM spend_window GROUP BY 1, 2, 3")
    return {(str(r[0]), str(r[1]), str(r[2])): tuple(r[3:]) for r in rows}


def expected(events: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    out: dict[tuple[str, str, str], list[Any]] = {}
    for e in events:
        row = out.setdefault((e["tenant"], e["route"], e["feature"]), [0, 0, 0, 0, 0, Decimal(0)])
        for i, k in enumerate(
            ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
        ):
            row[i + 1] += e[k]
        row[0] += 1
        row[5] += reference.cost(e, PRICES) or 0
    return {k: tuple(v) for k, v in out.items()}


def published(env: Env, topic: str) -> int:
    return sum(asyncio.run(end_offsets(env.kafka_url, topic)).values())


def test_every_door_lands_exactly_and_a_resent_batch_counts_once(env: Env) -> None:
    usage = [
        event(event_id=f"u-{i}", tenant="acme", route="search", feature="ask",
              model="gpt-4o", provider="openai", input_tokens=1000 + i, output_tokens=10,
              cache_read_tokens=100, ts="2025-11-01T10:00:30Z")
        for i in range(3)
    ]  # fmt: skip
    cloud = [
        event(tenant="globex", route="checkout", feature="agent", input_tokens=2000 + i,
              request_id=f"ce-r{i}", ts="2025-11-01T10:01:30Z")
        for i in range(4)
    ]  # fmt: skip
    batch = [
        {"specversion": "1.0", "id": f"evt-{i}", "source": "billing-gw", "type": "finops.usage",
         "data": {k: v for k, v in e.items() if k != "event_id"}}
        for i, e in enumerate(cloud)
    ]  # fmt: skip
    openmeter = {
        "specversion": "1.0", "type": "litellm_tokens", "id": "chatcmpl-om-1",
        "time": "2025-11-01T10:02:00+00:00", "source": "litellm-proxy", "subject": "initech",
        "data": {"model": "gpt-4o", "cost": 0.01, "prompt_tokens": 300,
                 "completion_tokens": 40, "total_tokens": 340},
    }  # fmt: skip
    payloads = json.loads((DATA / "litellm_payloads.json").read_text())
    env.load_default_prices()
    with running_door(env) as door:
        body = b"\n".join([*map(line, usage), b'{"event_id": "bad", "tenant": "acme"}'])
        r = door.post("/v1/usage", body, NDJSON)
        assert r.status_code == 200, r.text
        assert (r.json()["accepted"], r.json()["rejected"]) == (3, 1)
        for _ in range(2):  # the same batch twice: its (source, id) pairs count once
            r = door.post("/v1/events", json.dumps(batch).encode(),
                          "application/cloudevents-batch+json")  # fmt: skip
            assert r.json()["accepted"] == 4, r.text
        r = door.post("/v1/events", json.dumps(openmeter).encode(), "application/cloudevents+json")
        assert r.json()["accepted"] == 1 and "no cache counts" in r.json()["notes"][0]
        # LiteLLM's generic_api bodies: a JSON array, NDJSON and one payload.
        r = door.post("/v1/litellm", json.dumps(payloads[:2]).encode(), "application/json")
        assert r.json()["accepted"] == 2, r.text
        ndjson = b"\n".join(json.dumps(p).encode() for p in payloads[2:4])
        assert door.post("/v1/litellm", ndjson, NDJSON).json()["accepted"] == 2
        r = door.post("/v1/litellm", json.dumps(payloads[4]).encode(), "application/json")
        assert r.json()["accepted"] == 1
    env.finops("worker", "--drain")

    om = event(
        tenant="initech", route="default", feature="default", model="gpt-4o",
        provider="openai", input_tokens=300, output_tokens=40, ts="2025-11-01T10:02:00Z",
    )  # fmt: skip
    want = expected([*usage, *cloud, om])
    got = spend(env)
    for k, v in want.items():
        assert got[k] == v, k
    # LiteLLM's calls under their team, route and feature tags, tokens as logged.
    litellm = {k: v for k, v in got.items() if k[0].startswith("team-")}
    assert litellm[("team-a", "chat", "extract")][:5] == (1, 1200, 34, 1000, 0)
    assert litellm[("team-b", "agent", "default")][:5] == (1, 2100, 50, 500, 1500)
    assert litellm[("team-b", "fallback", "default")][:2] == (2, 10)  # failure, then fallback
    attempts = env.query(
        "SELECT sum(requests), sum(failed_attempts), sum(retry_attempts) FROM spend_window"
        " WHERE tenant = 'team-b' AND route = 'fallback'"
    )
    assert tuple(attempts[0]) == (1, 1, 1)
    # The unmappable line is a dead letter, filed under its door, with its reason.
    dead = env.query("SELECT topic, partition, reason, raw FROM dead_letter")
    assert [(d[0], d[1]) for d in dead] == [("ingest:usage", -1)]
    assert str(dead[0][2]).startswith("schema:")
    assert published(env, f"{env.topic}-dlq") == 1
    # No prompt or completion text reached the topic or the database.
    stored = json.dumps([list(map(str, r)) for r in env.query("SELECT * FROM dead_letter")])
    assert "never-stored" not in stored


def test_hostile_requests_get_their_status_and_publish_nothing(env: Env) -> None:
    one = line(event(tenant="acme"))
    limits = {"FINOPS_INGEST_MAX_BODY_BYTES": "65536", "FINOPS_INGEST_MAX_PENDING": "5",
              "FINOPS_INGEST_LINGER_S": "1"}  # fmt: skip
    with running_door(env, **limits) as door:
        cases = {
            "no key": door.post("/v1/usage", one, NDJSON, key="") ,
            "unknown key": door.post("/v1/usage", one, NDJSON, key="fik_" + "x" * 43),
            "wrong type": door.post("/v1/usage", one, "text/html"),
            "too large": door.post("/v1/usage", b" " * 70_000 + one, NDJSON),
            "gzip bomb": door.post("/v1/usage", gzip.compress(b" " * 10_000_000), NDJSON,
                                   **{"Content-Encoding": "gzip"}),
            "bad gzip": door.post("/v1/usage", b"not gzip", NDJSON, **{"Content-Encoding": "gzip"}),
            "odd encoding": door.post("/v1/usage", one, NDJSON, **{"Content-Encoding": "br"}),
            "other tenant": door.post(
                "/v1/usage", b"\n".join([one, line(event(tenant="globex", event_id="e-2"))]),
                NDJSON, key=door.acme_key,
            ),
            "bad protobuf": door.post("/v1/traces", b"\xff\xff\xff\x0f", "application/x-protobuf"),
            "bad otlp json": door.post("/v1/traces", b'{"resourceSpans": 3}', "application/json"),
            "otlp bad id": door.post(
                "/v1/traces",
                json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
                    {"traceId": "zz", "spanId": "00", "attributes": []}]}]}]}).encode(),
                "application/json",
            ),
            "not json": door.post("/v1/litellm", b"{nope", "application/json"),
            "batch not array": door.post("/v1/events", b"{}", "application/cloudevents-batch+json"),
            "more than the buffer": door.post(
                "/v1/usage", b"\n".join(line(event(event_id=f"b{i}")) for i in range(6)), NDJSON
            ),
            "other tenant, refused": door.post(
                "/v1/usage", b"\n".join([one, line(event(tenant="globex", input_tokens=-1))]),
                NDJSON, key=door.acme_key,
            ),
            "too many items": door.post(
                "/v1/litellm", b"[" + b",".join([b"{}"] * 10_001) + b"]", "application/json"
            ),
        }  # fmt: skip
        status = {name: r.status_code for name, r in cases.items()}
        assert status == {
            "no key": 401, "unknown key": 401, "wrong type": 415, "too large": 413,
            "gzip bomb": 413, "bad gzip": 400, "odd encoding": 400, "other tenant": 403,
            "bad protobuf": 400, "bad otlp json": 400, "otlp bad id": 400, "not json": 400,
            "batch not array": 400, "more than the buffer": 413, "other tenant, refused": 403,
            "too many items": 413,
        }  # fmt: skip
        assert "WWW-Authenticate" in cases["no key"].headers
        # Three events wait for the broker (a second's linger): three more do not fit.
        from concurrent.futures import ThreadPoolExecutor

        three = [b"\n".join(line(event(event_id=f"{k}{i}")) for i in range(3)) for k in "pq"]
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(door.post, "/v1/usage", three[0], NDJSON)
            time.sleep(0.4)
            full = door.post("/v1/usage", three[1], NDJSON)
            assert (full.status_code, full.headers.get("Retry-After")) == (429, "1")
            assert waiting.result().json()["accepted"] == 3
        # ... and the bound key may publish its own tenant.
        assert door.post("/v1/usage", one, NDJSON, key=door.acme_key).json()["accepted"] == 1
        assert door.post("/v1/usage", one, NDJSON, key=door.acme_key).status_code == 200
    assert published(env, env.topic) == 3  # the three accepted requests, nothing else
    assert published(env, f"{env.topic}-dlq") == 0
    assert env.query("SELECT count(*) FROM dead_letter") == [(0,)]


def _genai(model: str, provider: str, inp: int, out: int, read: int = 0, write: int = 0,
           **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
        "gen_ai.request.model": model, "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
        "gen_ai.usage.cache_read.input_tokens": read,
        "gen_ai.usage.cache_creation.input_tokens": write,
        "tenant.id": "acme", "route": "support", "feature": "triage", **extra,
    }  # fmt: skip


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_the_opentelemetry_sdk_exports_usage_that_lands_exactly(env: Env, encoding: str) -> None:
    from tests.peers.otel_venv import export

    env.load_default_prices()
    traces = [
        # A retry: the first call failed, the second answered from the cache.
        [{"name": "chat gpt-4o", "attributes": _genai("gpt-4o", "openai", 1200, 0), "error": True},
         {"name": "chat gpt-4o", "attributes": _genai("gpt-4o", "openai", 1200, 80, read=1024)}],
        # Anthropic with a cache write; the legacy names and gen_ai.system.
        [{"name": "chat claude", "attributes": _genai(
            "claude-4.5-sonnet", "anthropic", 5000, 300, read=1000, write=2000)},
         {"name": "chat legacy", "attributes": {
             "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.prompt_tokens": 700, "gen_ai.usage.completion_tokens": 70,
             "tenant.id": "acme", "route": "support", "feature": "triage"}}],
    ]  # fmt: skip
    with running_door(env) as door:
        result = export({
            "url": door.url + "/v1/traces", "encoding": encoding, "key": door.any_key,
            "gzip": encoding == "protobuf",
            "resource": {"service.name": "support-app", "host.name": "app-7"}, "traces": traces,
        })  # fmt: skip
    env.finops("worker", "--drain")

    rows = env.query(
        f"SELECT provider, model, {SUMS}, sum(failed_attempts), sum(requests)"
        " FROM spend_window WHERE tenant = 'acme' AND route = 'support' AND feature = 'triage'"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    ts = "2025-11-01T10:00:00Z"  # any time after the prices' start
    gpt = [event(model="gpt-4o", provider="openai", input_tokens=i, output_tokens=o,
                 cache_read_tokens=r, ts=ts) for i, o, r in ((1200, 0, 0), (1200, 80, 1024),
                                                             (700, 70, 0))]  # fmt: skip
    claude = event(input_tokens=5000, output_tokens=300, cache_read_tokens=1000,
                   cache_write_tokens=2000, ts=ts)  # fmt: skip
    cost = {k: sum((reference.cost(e, PRICES) or Decimal(0)) for e in es)
            for k, es in (("openai", gpt), ("anthropic", [claude]))}  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("anthropic", "claude-4.5-sonnet", 1, 5000, 300, 1000, 2000, cost["anthropic"], 0, 1),
        # the legacy span is the second attempt of the Anthropic call's trace
        ("openai", "gpt-4o", 3, 3100, 150, 1024, 0, cost["openai"], 1, 1),
    ]
    # A trace is one request: its usage spans are its attempts, in order.
    attempts = env.query("SELECT count(*), sum(retry_attempts) FROM spend_window")
    assert attempts[0][1] == 2 and len(result["trace_ids"]) == 2


def test_cache_scrape_publishes_counter_growth_across_a_reset(env: Env) -> None:
    import http.server
    import threading

    from pipeline.embedded.runtime import free_port

    vllm = (DATA / "vllm_metrics.prom").read_text()

    # The same exposition with every prefix-cache counter grown, then reset.
    def scaled(text: str, factor: float) -> str:
        import re

        return re.sub(
            r"^(vllm:prefix_cache_(?:queries|hits)_total\{[^}]*\}) (\S+)$",
            lambda m: f"{m.group(1)} {float(m.group(2)) * factor}",
            text,
            flags=re.M,
        )

    scrapes = [vllm, scaled(vllm, 1.5), scaled(vllm, 0.25)]
    served: list[int] = []

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = scrapes[min(len(served), len(scrapes) - 1)].encode()
            served.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env.finops("cache", "scrape", f"http://127.0.0.1:{port}/metrics", "--node", "gpu-a1",
                   "--interval", "0.2", "--count", "3")  # fmt: skip
    finally:
        server.shutdown()
    env.finops("worker", "--drain")

    from pipeline.ingest.serving_metrics import VLLM_HITS, VLLM_QUERIES, counters

    first = counters(vllm)
    want: dict[str, list[int]] = {}
    for (metric, model, _), value in first.items():
        grown = value * 0.5 + value * 0.25  # growth to 1.5x, then a restart at 0.25x
        row = want.setdefault(model, [0, 0])
        row[metric == VLLM_HITS] += int(grown)
    assert VLLM_QUERIES and want
    rows = env.query(
        "SELECT model, sum(hit_tokens), sum(miss_tokens), sum(hits), sum(misses) FROM cache_window"
        " WHERE tenant = 'unattributed' AND route = 'node:gpu-a1' AND layer = 'prefix'"
        " GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        (model, hits, looked - hits, hits, looked - hits)
        for model, (looked, hits) in sorted(want.items())
    ]


def test_a_stopping_door_answers_what_it_took_and_flushes_it(env: Env) -> None:
    import os
    import signal
    from concurrent.futures import ThreadPoolExecutor

    body = b"\n".join(line(event(event_id=f"s{i}", node_id=f"gw-{i}")) for i in range(4))
    with running_door(env, FINOPS_INGEST_LINGER_S="2") as door, ThreadPoolExecutor(1) as pool:
        lingering = pool.submit(door.post, "/v1/usage", body, NDJSON)
        time.sleep(0.5)  # taken, waiting for others of its node keys
        os.kill(door.pid, signal.SIGTERM)
        answer = lingering.result()
    assert (answer.status_code, answer.json()["accepted"]) == (200, 4)
    assert published(env, env.topic) == 4
