"""Cache attribution windows from cache events, and what they are worth. Pure.

Per (window, tenant, route, layer, model, provider): hits, misses and the
tokens of each, so request-weighted hit rate = hits / (hits + misses) and
token-weighted hit rate = hit_tokens / (hit_tokens + miss_tokens) are exact
ratios of stored integers. Per (window, evicting tenant, evicted tenant,
layer, model, provider): evictions and evicted tokens, which name the
tenant whose launch thrashed a shared cache.

Dollars are not stored: :func:`saving` values tokens with the price book at
query time, so a price loaded later needs no re-processing. A prefix hit
saves the difference between the full input price and the cache-read price;
a response or semantic hit saves the whole call (prompt and answer); an
embedding hit saves the embedding call. The cost an eviction pushes onto the
evicted tenant is the saving it loses on its next lookup of that entry (one
re-read: a lower bound, since a hot prefix is read many times).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

from models.contracts import CacheEvent
from models.prices import PriceBook, PriceEntry
from pipeline.energy import window_of

WHOLE_CALL: Final = frozenset({"response", "semantic"})
UNKNOWN: Final = ""  # model/provider of an event that did not name them


def saving(layer: str, price: PriceEntry, tokens: int, output_tokens: int) -> Decimal:
    """USD that serving ``tokens`` (and, for whole-call layers, an answer of
    ``output_tokens``) from the ``layer`` cache saved against the model."""
    answer = output_tokens if layer in WHOLE_CALL else 0
    full = price.cost(
        input_tokens=tokens,
        output_tokens=answer,
        cache_read_tokens=0,
        cache_write_tokens=0,
        batch=False,
    )
    if layer != "prefix":
        return full
    read = price.cost(
        input_tokens=tokens,
        output_tokens=0,
        cache_read_tokens=tokens,
        cache_write_tokens=0,
        batch=False,
    )
    return full - read


def value_at(
    book: PriceBook,
    layer: str,
    model: str,
    provider: str,
    at: datetime,
    tokens: int,
    output_tokens: int,
) -> Decimal | None:
    """:func:`saving` with the price in force at ``at``; None when the model
    has no price then (or the cache did not name its model)."""
    price = book.price_at(model, provider, at)
    return None if price is None else saving(layer, price, tokens, output_tokens)


@dataclass(frozen=True)
class CacheWindow:
    window_start: datetime
    tenant: str
    route: str
    layer: str
    model: str
    provider: str
    hits: int = 0
    misses: int = 0
    hit_tokens: int = 0
    miss_tokens: int = 0
    inserts: int = 0
    hit_output_tokens: int = 0

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
    model: str
    provider: str
    evictions: int
    evicted_tokens: int
    evicted_output_tokens: int = 0


def cache_windows(events: Iterable[CacheEvent]) -> tuple[list[CacheWindow], list[EvictionWindow]]:
    counts: dict[tuple[datetime, str, str, str, str, str], list[int]] = defaultdict(lambda: [0] * 6)
    evictions: dict[tuple[datetime, str, str, str, str, str], list[int]] = defaultdict(
        lambda: [0, 0, 0]
    )
    for e in events:
        w = window_of(e.ts)
        model, provider = e.model or UNKNOWN, e.provider or UNKNOWN
        c = counts[(w, e.tenant, e.route, e.layer, model, provider)]
        if e.op == "hit":
            c[0] += 1
            c[2] += e.tokens
            c[5] += e.output_tokens
        elif e.op == "miss":
            c[1] += 1
            c[3] += e.tokens
        elif e.op == "insert":
            c[4] += 1
        else:  # evict: the event's tenant caused it, owner_tenant lost the entry
            assert e.owner_tenant is not None  # the contract requires it
            ev = evictions[(w, e.tenant, e.owner_tenant, e.layer, model, provider)]
            ev[0] += 1
            ev[1] += e.tokens
            ev[2] += e.output_tokens
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
