"""Cache attribution windows from cache events. Pure.

Per (window, tenant, route, layer): hits, misses and the tokens of each, so
request-weighted hit rate = hits / (hits + misses) and token-weighted hit
rate = hit_tokens / (hit_tokens + miss_tokens) are exact ratios of stored
integers. Per (window, evicting tenant, evicted tenant, layer): evictions and
evicted tokens, which name the tenant whose launch thrashed a shared cache.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from models.contracts import CacheEvent
from pipeline.energy import window_of


@dataclass(frozen=True)
class CacheWindow:
    window_start: datetime
    tenant: str
    route: str
    layer: str
    hits: int = 0
    misses: int = 0
    hit_tokens: int = 0
    miss_tokens: int = 0
    inserts: int = 0

    @property
    def hit_rate(self) -> Fraction | None:
        seen = self.hits + self.misses
        return Fraction(self.hits, seen) if seen else None

    @property
    def token_hit_rate(self) -> Fraction | None:
        seen = self.hit_tokens + self.miss_tokens
        return Fraction(self.hit_tokens, seen) if seen else None


@dataclass(frozen=True)
class EvictionWindow:
    window_start: datetime
    evicting_tenant: str
    evicted_tenant: str
    layer: str
    evictions: int
    evicted_tokens: int


def cache_windows(events: Iterable[CacheEvent]) -> tuple[list[CacheWindow], list[EvictionWindow]]:
    counts: dict[tuple[datetime, str, str, str], list[int]] = defaultdict(lambda: [0] * 5)
    evictions: dict[tuple[datetime, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        w = window_of(e.ts)
        c = counts[(w, e.tenant, e.route, e.layer)]
        if e.op == "hit":
            c[0] += 1
            c[2] += e.tokens
        elif e.op == "miss":
            c[1] += 1
            c[3] += e.tokens
        elif e.op == "insert":
            c[4] += 1
        else:  # evict: the event's tenant caused it, owner_tenant lost the entry
            assert e.owner_tenant is not None  # the contract requires it
            ev = evictions[(w, e.tenant, e.owner_tenant, e.layer)]
            ev[0] += 1
            ev[1] += e.tokens
    windows = [CacheWindow(*k, *v) for k, v in sorted(counts.items()) if any(v)]
    evicted = [EvictionWindow(*k, *v) for k, v in sorted(evictions.items())]
    return windows, evicted


def top_evictors(
    evicted: Iterable[EvictionWindow], *, others_only: bool = True
) -> list[tuple[str, int]]:
    """Tenants by the tokens they evicted from *other* tenants, most first."""
    totals: dict[str, int] = defaultdict(int)
    for e in evicted:
        if not others_only or e.evicting_tenant != e.evicted_tenant:
            totals[e.evicting_tenant] += e.evicted_tokens
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
