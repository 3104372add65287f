"""Cache hit rates by tenant and layer over time, and who evicted whom."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class HitRate:
    bucket: datetime
    tenant: str
    layer: str
    hits: int
    misses: int
    hit_tokens: int
    miss_tokens: int

    @property
    def rate(self) -> Fraction | None:
        n = self.hits + self.misses
        return Fraction(self.hits, n) if n else None


def hit_rates(
    engine: Engine, start: datetime, end: datetime, bucket_minutes: int = 10, shared: bool = False
) -> list[HitRate]:
    """Per time bucket and tenant (or '*' for the shared cache as a whole)."""
    tenant = "'*'" if shared else "tenant"
    sql = text(
        "SELECT date_bin(make_interval(mins => :m), window_start, TIMESTAMPTZ '2000-01-01') AS b,"
        f" {tenant} AS t, layer, sum(hits), sum(misses), sum(hit_tokens), sum(miss_tokens)"
        " FROM cache_window WHERE window_start >= :start AND window_start < :end"
        " GROUP BY b, t, layer ORDER BY b, t, layer"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"m": bucket_minutes, "start": start, "end": end}).all()
    return [HitRate(r[0], str(r[1]), str(r[2]), *(int(v) for v in r[3:])) for r in rows]


@dataclass(frozen=True)
class Evictor:
    evicting_tenant: str
    evicted_tenant: str
    evictions: int
    evicted_tokens: int


def evictors(engine: Engine, start: datetime, end: datetime) -> list[Evictor]:
    """Who evicted whose entries (other tenants only), most tokens first."""
    sql = text(
        "SELECT evicting_tenant, evicted_tenant, sum(evictions), sum(evicted_tokens)"
        " FROM cache_eviction_window WHERE window_start >= :start AND window_start < :end"
        " AND evicting_tenant <> evicted_tenant"
        " GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"start": start, "end": end}).all()
    return [Evictor(str(a), str(b), int(c), int(d)) for a, b, c, d in rows]


@dataclass(frozen=True)
class ProviderPrefix:
    tenant: str
    route: str
    model: str
    input_tokens: int
    cache_read_tokens: int

    @property
    def rate(self) -> Fraction | None:
        return Fraction(self.cache_read_tokens, self.input_tokens) if self.input_tokens else None


def provider_prefix_rates(engine: Engine, start: datetime, end: datetime) -> list[ProviderPrefix]:
    """The providers' own prompt-cache hit rate, from usage events:
    cache_read_tokens / input_tokens per tenant, route and model."""
    sql = text(
        "SELECT tenant, route, model, sum(input_tokens), sum(cache_read_tokens)"
        " FROM spend_window WHERE window_start >= :start AND window_start < :end"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    with engine.connect() as conn:
        rows = conn.execute(sql, {"start": start, "end": end}).all()
    return [ProviderPrefix(str(a), str(b), str(c), int(d), int(e)) for a, b, c, d, e in rows]
