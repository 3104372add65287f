"""Seeded, realistic LLM traffic: tenants, routes, features, models, retries,
structured-output re-prompts, prompt caching, batch calls and fallbacks.

Pure: given a seed and a start time it yields the same events every time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any, Final


@dataclass(frozen=True)
class ModelSpec:
    model: str
    provider: str
    nodes: tuple[str, ...]
    latency_ms_per_out_token: float


MODELS: Final = {
    "claude-4.5-sonnet": ModelSpec("claude-4.5-sonnet", "anthropic", ("gw-1", "gw-2", "gw-3"), 9),
    "gpt-4o": ModelSpec("gpt-4o", "openai", ("gw-1", "gw-2", "gw-3"), 7),
    "gemini-2.5-pro": ModelSpec("gemini-2.5-pro", "google", ("gw-2", "gw-3"), 8),
    "deepseek-v3": ModelSpec("deepseek-v3", "deepseek", ("gw-1", "gw-4"), 11),
    "qwen3-32b": ModelSpec("qwen3-32b", "self-hosted", ("gpu-a1", "gpu-a2"), 4),
    "llama-3.3-70b": ModelSpec("llama-3.3-70b", "self-hosted", ("gpu-b1", "gpu-b2"), 6),
    # On no route and in no price book: only the unpriced-model incident uses it.
    "mystery-9b": ModelSpec("mystery-9b", "newco", ("gw-4",), 5),
}


@dataclass(frozen=True)
class RouteSpec:
    route: str
    feature: str
    models: tuple[tuple[str, float], ...]  # model, weight
    input_mean: int
    output_mean: int
    cached_prefix: float  # share of calls that reuse a cached prompt prefix
    structured: bool  # output must parse; invalid output is re-prompted
    batch_share: float
    fallback: str | None


ROUTES: Final = (
    RouteSpec(
        "/v1/chat",
        "support-bot",
        (("claude-4.5-sonnet", 0.6), ("gpt-4o", 0.4)),
        3000,
        400,
        0.8,
        False,
        0.0,
        "gpt-4o",
    ),
    RouteSpec(
        "/v1/summarize",
        "doc-summary",
        (("gemini-2.5-pro", 0.4), ("llama-3.3-70b", 0.3), ("qwen3-32b", 0.3)),
        8000,
        600,
        0.6,
        False,
        0.25,
        "claude-4.5-sonnet",
    ),
    RouteSpec(
        "/v1/extract",
        "invoice-extraction",
        (("gpt-4o", 0.4), ("qwen3-32b", 0.3), ("llama-3.3-70b", 0.3)),
        2500,
        300,
        0.7,
        True,
        0.1,
        "claude-4.5-sonnet",
    ),
    RouteSpec(
        "/v1/agent",
        "agent-runner",
        (("claude-4.5-sonnet", 0.7), ("deepseek-v3", 0.3)),
        6000,
        800,
        0.85,
        True,
        0.0,
        "gpt-4o",
    ),
    RouteSpec(
        "/v1/complete",
        "code-assist",
        (("deepseek-v3", 0.4), ("qwen3-32b", 0.3), ("llama-3.3-70b", 0.3)),
        1500,
        250,
        0.75,
        False,
        0.0,
        None,
    ),
    RouteSpec(
        "/v1/answer",
        "search-answer",
        (("gemini-2.5-pro", 0.4), ("gpt-4o", 0.6)),
        4000,
        350,
        0.5,
        False,
        0.0,
        "claude-4.5-sonnet",
    ),
)

TENANTS: Final = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "aperture",
)


@dataclass(frozen=True)
class SimConfig:
    start: datetime
    duration_s: float = 3600.0
    rate: float = 50.0  # requests per second of event time
    seed: int = 7
    tenants: tuple[str, ...] = TENANTS
    max_events: int | None = None  # stop after this many attempts
    retry_rate: float = 0.03
    invalid_output_rate: float = 0.08
    # One of INCIDENTS, injected from the middle of the run for a quarter of
    # it (at most 15 minutes).
    incident: str | None = None

    def incident_window(self) -> tuple[datetime, datetime] | None:
        if self.incident is None:
            return None
        begin = self.start + timedelta(seconds=self.duration_s / 2)
        return begin, begin + timedelta(seconds=min(900.0, self.duration_s / 4))

    def during(self, incident: str, ts: datetime) -> bool:
        window = self.incident_window()
        return self.incident == incident and window is not None and window[0] <= ts < window[1]


AGENT_ROUTE: Final = next(i for i, r in enumerate(ROUTES) if r.route == "/v1/agent")
THRASHER: Final = "launchco"
SPENDER: Final = "soylent"  # a small tenant whose traffic explodes in spend-spike
RUNAWAY_REQUEST: Final = "runaway-agent-0001"
INCIDENTS: Final = {
    "cache-thrash": "a new tenant's onboarding burst evicts everyone's prompt prefixes",
    "retry-storm": "/v1/agent calls fail and retry up to 10 times",
    "structured-output-loop": "/v1/extract answers fail to parse and are re-prompted",
    "budget-breach": "/v1/summarize prompts grow past the route's input cap",
    "prompt-change": "a prompt change triples doc-summary's input tokens",
    "unpriced-model": "/v1/complete routes half its calls to a model with no price",
    "tokenizer-drift": "the gateway's tokenizer undercounts claude-4.5-sonnet by 11% (CJK)",
    "runaway-agent": "one agent request retries every second with a 200k-token prompt",
    "spend-spike": f"{SPENDER} floods /v1/agent with huge calls: 60% of all traffic",
}


def _tokens(rng: random.Random, mean: int) -> int:
    return max(1, int(rng.lognormvariate(0, 0.6) * mean * 0.84))


def generate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """Attempts in event-time order of their request (retries follow closely)."""
    rng = random.Random(cfg.seed)
    tenant_cum = list(accumulate(1 / (i + 1) ** 0.8 for i in range(len(cfg.tenants))))
    route_models = [
        ([m for m, _ in r.models], list(accumulate(w for _, w in r.models))) for r in ROUTES
    ]
    requests = int(cfg.duration_s * cfg.rate)
    emitted = 0
    runaway = _runaway(cfg)
    pending = next(runaway, None)
    for i in range(requests):
        ts = cfg.start + timedelta(seconds=(i + rng.random()) / cfg.rate)
        while pending is not None and datetime.fromisoformat(pending["ts"]) <= ts:
            yield pending
            emitted += 1
            if cfg.max_events is not None and emitted >= cfg.max_events:
                return
            pending = next(runaway, None)
        tenant = rng.choices(cfg.tenants, cum_weights=tenant_cum)[0]
        in_thrash = cfg.during("cache-thrash", ts)
        if in_thrash and rng.random() < 0.5:
            tenant = THRASHER  # the onboarding burst: half of all traffic
        spiking = cfg.during("spend-spike", ts) and rng.random() < 0.6
        if spiking:
            tenant = SPENDER
        r = AGENT_ROUTE if spiking else rng.randrange(len(ROUTES))
        spec = ROUTES[r]
        model_name = rng.choices(route_models[r][0], cum_weights=route_models[r][1])[0]
        if cfg.during("unpriced-model", ts) and spec.route == "/v1/complete" and rng.random() < 0.5:
            model_name = "mystery-9b"
        request_id = f"{rng.getrandbits(128):032x}"
        input_tokens = _tokens(rng, spec.input_mean)
        if cfg.during("budget-breach", ts) and spec.route == "/v1/summarize":
            input_tokens *= 12
        if cfg.during("prompt-change", ts) and spec.feature == "doc-summary":
            input_tokens *= 3
        if spiking:
            input_tokens *= 10
        storm = cfg.during("retry-storm", ts) and spec.route == "/v1/agent"
        looping = cfg.during("structured-output-loop", ts) and spec.route == "/v1/extract"
        max_attempts = 10 if storm or looping else 4
        retry_rate = 0.75 if storm else cfg.retry_rate
        invalid_rate = 0.65 if looping else cfg.invalid_output_rate
        # During the thrash the burst's new prompts evict the shared prefixes:
        # others hit about 0.28 as often, the newcomer almost never.
        hit_rate = spec.cached_prefix * (0.28 if tenant != THRASHER else 0.05)
        cached = rng.random() < (hit_rate if in_thrash else spec.cached_prefix)
        batch = rng.random() < spec.batch_share
        attempt = 1
        fallback_from: str | None = None
        retry_reason: str | None = None
        while True:
            model = MODELS[model_name]
            output_tokens = _tokens(rng, spec.output_mean) * (40 if spiking else 1)
            if cached:
                cache_read, cache_write = int(input_tokens * rng.uniform(0.5, 0.9)), 0
            else:
                cache_read, cache_write = 0, int(input_tokens * rng.uniform(0.0, 0.3))
            roll = rng.random()
            if attempt < max_attempts and roll < retry_rate:
                status = rng.choice(("error", "timeout"))
                output_tokens = 0 if status == "timeout" else output_tokens // 10
            elif attempt < max_attempts and spec.structured and roll < retry_rate + invalid_rate:
                status = "invalid_output"
            else:
                status = "ok"
            latency = int(output_tokens * model.latency_ms_per_out_token + rng.uniform(80, 400))
            event: dict[str, Any] = {
                "event_id": f"{rng.getrandbits(128):032x}",
                "ts": ts.isoformat().replace("+00:00", "Z"),
                "tenant": tenant,
                "route": spec.route,
                "feature": spec.feature,
                "model": model.model,
                "provider": model.provider,
                "node_id": rng.choice(model.nodes),
                "request_id": request_id,
                "attempt": attempt,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "batch": batch,
                "status": status,
                "latency_ms": latency,
                "ttft_ms": int(latency * rng.uniform(0.05, 0.2)),
                "local_input_tokens": int(input_tokens * rng.uniform(0.97, 1.03)),
            }
            if cfg.during("tokenizer-drift", ts) and model.model == "claude-4.5-sonnet":
                event["local_input_tokens"] = int(input_tokens * rng.uniform(0.88, 0.90))
            if retry_reason:
                event["retry_reason"] = retry_reason
            if fallback_from:
                event["fallback_from"] = fallback_from
            if model.provider == "self-hosted":
                event["batch_size"] = rng.choice((1, 2, 4, 8, 16, 32))
            yield event
            emitted += 1
            if cfg.max_events is not None and emitted >= cfg.max_events:
                return
            if status == "ok":
                break
            retry_reason = status
            attempt += 1
            ts += timedelta(milliseconds=latency + rng.uniform(50, 2000))
            if status != "invalid_output" and attempt == 3 and spec.fallback:
                fallback_from, model_name = model_name, spec.fallback


def _runaway(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """The runaway-agent incident: one request of acme's on /v1/agent that
    fails and retries every second, each attempt with a 200k-token prompt."""
    window = cfg.incident_window()
    if cfg.incident != "runaway-agent" or window is None:
        return
    rng = random.Random(cfg.seed + 2)
    ts, attempt = window[0], 1
    while ts < window[1]:
        yield {
            "event_id": f"{rng.getrandbits(128):032x}",
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "tenant": "acme",
            "route": "/v1/agent",
            "feature": "agent-runner",
            "model": "claude-4.5-sonnet",
            "provider": "anthropic",
            "node_id": "gw-1",
            "request_id": RUNAWAY_REQUEST,
            "attempt": min(attempt, 10_000),
            "input_tokens": 200_000,
            "output_tokens": 1_500,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "batch": False,
            "status": "error",
            "retry_reason": "tool_error",
            "latency_ms": 1_800,
            "ttft_ms": 300,
            "local_input_tokens": 200_000,
        }
        attempt += 1
        ts += timedelta(seconds=1)


def lines(cfg: SimConfig) -> Iterator[bytes]:
    for event in generate(cfg):
        yield json.dumps(event, separators=(",", ":")).encode()
