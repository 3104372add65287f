"""GPU telemetry and cache events that go with simulated usage. Pure.

Telemetry: each self-hosted node has two GPUs sampled every 5 s. A GPU draws
its idle power plus the energy of the attempts its node served in the last
interval, from a simple physical model: joules per token by model tier
(the 70B model about 2.3x the 32B one), decode ~10x prefill, a cached prefix
token ~10x cheaper than an uncached one, and a token in a large serving
batch about a quarter of an unbatched one (the same factors as the
attribution weights, ``pipeline.energy.attribution.BATCH_FACTORS``). The DCGM-style
counter is the running sum, in millijoules.

Cache events: every attempt looks its prompt prefix up in the shared prefix
cache (hit when the usage event read from cache, else a miss and an
insert). During the cache-thrash incident each miss of the newcomer evicts
another tenant's prefix. A request's first (non-batch) attempt missed the
exact-response and semantic caches before it reached the model; a few
look-alike requests were answered from them instead. Every cache event names
the model the cache fronts, so its hits can be valued with the price book.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pipeline.energy.attribution import BATCH_FACTORS, batch_bucket
from pipeline.testbed.simulate.usage import THRASHER, SimConfig

SAMPLE_EVERY: Final = timedelta(seconds=5)
GPUS: Final = ("0", "1")
IDLE_W: Final = 60.0
TIER: Final = {"qwen3-32b": 1.0, "llama-3.3-70b": 2.3}
# Joules per token for the 32B tier, unbatched.
J_PREFILL, J_CACHED, J_DECODE = 0.05, 0.005, 0.5
# Share of first attempts that have a look-alike request answered from the
# exact-response cache, and from the semantic cache.
RESPONSE_HIT, SEMANTIC_HIT = 0.05, 0.03


def attempt_joules(e: dict[str, Any]) -> float:
    uncached = e["input_tokens"] - e["cache_read_tokens"]
    tokens_j = (
        J_PREFILL * uncached + J_CACHED * e["cache_read_tokens"] + J_DECODE * e["output_tokens"]
    )
    batch = BATCH_FACTORS[batch_bucket(e.get("batch_size"))] / BATCH_FACTORS["1"]
    return float(TIER.get(e["model"], 1.0) * tokens_j * batch)


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _at(ts: str) -> datetime:
    """The instant of a ``_ts`` string (the usage events' ``ts``)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def telemetry(
    events: Sequence[dict[str, Any]], cfg: SimConfig, *, baseline: bool = True
) -> Iterator[dict[str, Any]]:
    """Samples every 5 s from the span's first instant to its end. Without
    ``baseline`` the first instant is left out: a span that continues one
    already published was sampled there, by that span's last sample, and a
    second sample of that instant would be dead-lettered as out of order."""
    nodes = sorted({e["node_id"] for e in events if e["provider"] == "self-hosted"})
    slot = SAMPLE_EVERY.total_seconds()
    load: dict[tuple[str, int], float] = defaultdict(float)  # (node, interval) -> joules
    for e in events:
        if e["provider"] == "self-hosted":
            t = _at(e["ts"])
            load[(e["node_id"], int((t - cfg.start).total_seconds() // slot) + 1)] += (
                attempt_joules(e)
            )
    counters = {(n, g): 10**9 for n in nodes for g in GPUS}  # mJ since "boot"
    # Sample the simulated span, not the configured duration: a run capped by
    # max_events ends long before a large duration_s would.
    last = max((k for _, k in load), default=0)
    for k in range(0 if baseline else 1, min(int(cfg.duration_s // slot), last) + 1):
        ts = _ts(cfg.start + k * SAMPLE_EVERY)
        for node in nodes:
            joules = load.get((node, k), 0.0) / len(GPUS) + (IDLE_W * slot if k else 0.0)
            for gpu in GPUS:
                counters[(node, gpu)] += int(joules * 1000)
                yield {
                    "node_id": node,
                    "gpu": gpu,
                    "ts": ts,
                    "power_w": round(joules / slot, 3) if k else IDLE_W,
                    "energy_mj": counters[(node, gpu)],
                    "model": "NVIDIA H100 80GB HBM3",
                }


def cache_events(events: Sequence[dict[str, Any]], cfg: SimConfig) -> Iterator[dict[str, Any]]:
    rng = random.Random(cfg.seed + 1)
    others = [t for t in cfg.tenants if t != THRASHER]
    for e in events:
        base = {
            "node_id": e["node_id"],
            "ts": e["ts"],
            "tenant": e["tenant"],
            "route": e["route"],
            "model": e["model"],
            "provider": e["provider"],
        }
        if e["attempt"] == 1 and not e["batch"]:
            yield from _answer_caches(base, e, rng)
        hit = e["cache_read_tokens"] > 0
        tokens = e["cache_read_tokens"] if hit else e["input_tokens"]
        yield {**base, "layer": "prefix", "op": "hit" if hit else "miss", "tokens": tokens}
        if hit:
            continue
        yield {**base, "layer": "prefix", "op": "insert", "tokens": e["input_tokens"]}
        t = _at(e["ts"])
        if cfg.during("cache-thrash", t) and e["tenant"] == THRASHER:
            yield {
                **base,
                "layer": "prefix",
                "op": "evict",
                "tokens": e["input_tokens"],
                "owner_tenant": rng.choice(others),
            }


def counters(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Cache events as a cache node sends them when it keeps counters: one
    line per minute and group (node, tenant, route, layer, op, model,
    provider, owner), with ``count`` operations and their summed tokens,
    stamped with the minute's start. They give the same windows as the
    events themselves; on the bench's traffic (200 calls a second) in a
    fifteenth of the lines."""
    sums: dict[tuple[datetime, tuple[Any, ...]], list[int]] = {}
    for e in items:
        acc = sums.setdefault((_minute(e["ts"]), tuple(e.get(f) for f in _GROUP)), [0, 0, 0])
        acc[0] += e["tokens"]
        acc[1] += e.get("output_tokens", 0)
        acc[2] += e.get("count", 1)  # a line may already stand for several operations
    for (minute, group), (tokens, output_tokens, count) in sorted(
        sums.items(), key=lambda kv: kv[0][0]
    ):
        line = {f: v for f, v in zip(_GROUP, group, strict=True) if v is not None}
        line.update(ts=_ts(minute), tokens=tokens, count=count)
        if output_tokens:
            line["output_tokens"] = output_tokens
        yield line


def _minute(ts: str) -> datetime:
    return _at(ts).astimezone(UTC).replace(second=0, microsecond=0)


_GROUP: Final = ("node_id", "tenant", "route", "layer", "op", "model", "provider", "owner_tenant")


def _answer_caches(
    base: dict[str, Any], e: dict[str, Any], rng: random.Random
) -> Iterator[dict[str, Any]]:
    """A request that reached the model missed the exact-response and the
    semantic cache first. Some look-alike requests were answered from one of
    them and never reached a model (they have no usage event): a hit that
    saved the whole call. Only a successful answer is cached."""
    prompt, answer = e["input_tokens"], e["output_tokens"]
    yield {**base, "layer": "response", "op": "miss", "tokens": prompt}
    yield {**base, "layer": "semantic", "op": "miss", "tokens": prompt}
    if e["status"] != "ok":
        return  # nothing worth caching came back
    yield {**base, "layer": "response", "op": "insert", "tokens": prompt, "output_tokens": answer}
    u = rng.random()
    if u < RESPONSE_HIT + SEMANTIC_HIT:
        layer = "response" if u < RESPONSE_HIT else "semantic"
        yield {**base, "layer": layer, "op": "hit", "tokens": prompt, "output_tokens": answer}


def lines(items: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for item in items:
        yield json.dumps(item, separators=(",", ":")).encode()
