"""Cache hit rates by tenant and layer over time, and who evicted whom."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import Engine, text

from pipeline.cache.windows import value_at
from pipeline.spend.price_store import load_book


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


@dataclass
class Valued:
    """Tokens and what they are worth; tokens of models without a price in
    force (or caches that did not name their model) are counted apart."""

    events: int = 0
    tokens: int = 0
    usd: Decimal = Decimal(0)
    unpriced_tokens: int = 0


def _valued(
    engine: Engine, sql: str, start: datetime, end: datetime, key: tuple[int, ...]
) -> dict[tuple[str, ...], Valued]:
    """Rows of (window_start, layer, model, provider, events, tokens,
    output_tokens, ...), each valued with the price in force at its window
    start, summed per the columns at the ``key`` positions."""
    with engine.connect() as conn:
        rows = conn.execute(text(sql), {"start": start, "end": end}).all()
    book = load_book(engine)
    out: dict[tuple[str, ...], Valued] = defaultdict(Valued)
    for r in rows:
        at, layer, model, provider, events, tokens, output_tokens = r[:7]
        v = out[tuple(str(r[i]) for i in key)]
        v.events += int(events)
        v.tokens += int(tokens)
        usd = value_at(book, layer, model, provider, at, int(tokens), int(output_tokens))
        if usd is None:
            v.unpriced_tokens += int(tokens)
        else:
            v.usd += usd
    return dict(out)


@dataclass(frozen=True)
class Saving:
    tenant: str
    layer: str
    hits: Valued


def savings(engine: Engine, start: datetime, end: datetime) -> list[Saving]:
    """Dollars each tenant's cache hits saved, per layer, most first."""
    sql = (
        "SELECT window_start, layer, model, provider, sum(hits), sum(hit_tokens),"
        " sum(hit_output_tokens), tenant FROM cache_window"
        " WHERE window_start >= :start AND window_start < :end AND hits > 0"
        " GROUP BY window_start, layer, model, provider, tenant"
    )
    found = _valued(engine, sql, start, end, key=(7, 1))
    rows = [Saving(t, layer, v) for (t, layer), v in found.items()]
    return sorted(rows, key=lambda s: (-s.hits.usd, s.tenant, s.layer))


@dataclass(frozen=True)
class Evictor:
    evicting_tenant: str
    evicted_tenant: str
    evicted: Valued

    @property
    def evictions(self) -> int:
        return self.evicted.events

    @property
    def evicted_tokens(self) -> int:
        return self.evicted.tokens

    @property
    def pushed_usd(self) -> Decimal:
        """The cost pushed onto the evicted tenant: what its next lookup of
        each evicted entry would have saved (one re-read, a lower bound)."""
        return self.evicted.usd


def evictors(engine: Engine, start: datetime, end: datetime) -> list[Evictor]:
    """Who evicted whose entries (other tenants only), most tokens first."""
    sql = (
        "SELECT window_start, layer, model, provider, sum(evictions), sum(evicted_tokens),"
        " sum(evicted_output_tokens), evicting_tenant, evicted_tenant FROM cache_eviction_window"
        " WHERE window_start >= :start AND window_start < :end"
        " AND evicting_tenant <> evicted_tenant"
        " GROUP BY window_start, layer, model, provider, evicting_tenant, evicted_tenant"
    )
    found = _valued(engine, sql, start, end, key=(7, 8))
    rows = [Evictor(a, b, v) for (a, b), v in found.items()]
    return sorted(rows, key=lambda e: (-e.evicted_tokens, e.evicting_tenant, e.evicted_tenant))


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
