"""The versioned price book: entries with effective dates, and their parsers.

A price is effective-dated per (model, provider, region, service tier): a
version applies from its ``effective_from`` until the next version of the
same key takes over, so loading a new price never rewrites the cost of
events that happened before it.

A version is one entry per prompt-size tier: the entry whose
``from_input_tokens`` is the largest not above the request's prompt
(``input_tokens``, cache reads and writes included) prices the whole
request, every token kind at that entry's rates (how providers bill their
long-context tiers). ``from_input_tokens`` is inclusive, so a provider that
switches when the prompt is *above* 200,000 tokens has an entry from
200,001, and one that switches *at* 200,000 an entry from 200,000.

Which version prices an event (:meth:`PriceBook.rate`): its region's, else
the book's regionless one (``region`` empty); its service tier's, else the
standard tier's, and for the batch tier the standard rates less
``batch_discount`` (so v1 books, with no tiers, keep their batch rule).

Parsers take text, not paths: reading files is the caller's job.
"""

from __future__ import annotations

import csv
import io
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import yaml
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from models.money import (
    DISCOUNT_DECIMALS,
    PRICE_DECIMALS,
    KindCosts,
    TokenCounts,
    check_scale,
    kind_costs,
)

CSV_HEADER_V1: Final = (
    "model,provider,effective_from,input_per_mtok,output_per_mtok,"
    "cache_read_per_mtok,cache_write_per_mtok,batch_discount"
)
# What identifies an entry, and what it prices with: the v2 CSV's columns,
# the price_book table's key and compared columns.
ENTRY_KEY: Final = (
    "model",
    "provider",
    "region",
    "service_tier",
    "from_input_tokens",
    "effective_from",
)
RATES: Final = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
    "cache_write_1h_per_mtok",
    "reasoning_per_mtok",
    "batch_discount",
)
CSV_HEADER: Final = ",".join((*ENTRY_KEY, *RATES))
ServiceTier = Literal["standard", "priority", "flex", "batch"]
STANDARD: Final = "standard"
BATCH: Final = "batch"


MAX_PRICE: Final = Decimal(10) ** 14  # NUMERIC(20, 6) holds 14 integer digits


def _price(v: Decimal) -> Decimal:
    if v < 0:
        raise ValueError("a price must not be negative")
    if v >= MAX_PRICE:
        raise ValueError(f"a price per Mtok must be below {MAX_PRICE:,}")
    return check_scale(v, PRICE_DECIMALS, "price per Mtok")


def _discount(v: Decimal) -> Decimal:
    if not Decimal(0) <= v <= Decimal(1):
        raise ValueError("batch_discount must be between 0 and 1")
    return check_scale(v, DISCOUNT_DECIMALS, "batch_discount")


Price = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_price)]
Discount = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_discount)]
Name = Annotated[str, Field(min_length=1, pattern=r"\S")]


class PriceEntry(BaseModel):
    """USD per million tokens for one (model, provider, region, service tier)
    and prompt-size tier, from ``effective_from``.

    ``cache_write_per_mtok`` is the rate of 5-minute cache writes, and of
    every write when ``cache_write_1h_per_mtok`` is empty; an empty
    ``reasoning_per_mtok`` bills thinking tokens as output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Name
    provider: Name
    region: str = ""
    service_tier: ServiceTier = STANDARD
    from_input_tokens: Annotated[int, Field(ge=0, le=10**12)] = 0
    effective_from: AwareDatetime
    input_per_mtok: Price
    output_per_mtok: Price
    cache_read_per_mtok: Price
    cache_write_per_mtok: Price
    cache_write_1h_per_mtok: Price | None = None
    reasoning_per_mtok: Price | None = None
    batch_discount: Discount = Decimal(0)
    currency: Annotated[str, Field(pattern=r"^USD$")] = "USD"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What a version is dated by."""
        return (self.model, self.provider, self.region, self.service_tier)

    @property
    def entry_key(self) -> tuple[object, ...]:
        """What identifies this entry in the book (:data:`ENTRY_KEY`)."""
        return tuple(getattr(self, k) for k in ENTRY_KEY)

    def costs(self, tokens: TokenCounts, *, discounted: bool) -> KindCosts:
        """The cost of ``tokens`` at this entry, by token kind; ``discounted``
        takes ``batch_discount`` off (a batch call priced at standard rates)."""
        return kind_costs(
            tokens,
            input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok,
            cache_read_per_mtok=self.cache_read_per_mtok,
            cache_write_per_mtok=self.cache_write_per_mtok,
            cache_write_1h_per_mtok=self.cache_write_1h_per_mtok,
            reasoning_per_mtok=self.reasoning_per_mtok,
            discount=self.batch_discount if discounted else Decimal(0),
        )

    def cost(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
        batch: bool,
    ) -> Decimal:
        """The total of :meth:`costs`, ``batch`` taking the discount off."""
        tokens = TokenCounts(
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cache_write_1h_tokens,
            reasoning_tokens,
        )
        return self.costs(tokens, discounted=batch).total


@dataclass(frozen=True)
class Rate:
    """What prices one event: ``entries[price_id]``, less its batch discount
    when ``discounted``; and the standard tier's rate it lists at."""

    price_id: int
    discounted: bool
    list_price_id: int


@dataclass(frozen=True)
class PriceBook:
    """An immutable snapshot of all price versions, with as-of lookup."""

    entries: tuple[PriceEntry, ...] = ()
    _index: dict[tuple[str, str, str, str], tuple[list[datetime], list[list[tuple[int, int]]]]] = (
        field(init=False, repr=False, compare=False)
    )

    def __post_init__(self) -> None:
        grouped: dict[tuple[str, str, str, str], dict[datetime, list[tuple[int, int]]]] = {}
        for i, e in enumerate(self.entries):
            tiers = grouped.setdefault(e.key, {}).setdefault(e.effective_from, [])
            tiers.append((e.from_input_tokens, i))
        index = {}
        for key, versions in grouped.items():
            starts = sorted(versions)
            index[key] = (starts, [sorted(versions[s]) for s in starts])
        object.__setattr__(self, "_index", index)

    @property
    def keys(self) -> frozenset[tuple[str, str, str, str]]:
        return frozenset(self._index)

    def version_at(
        self, key: tuple[str, str, str, str], ts: datetime
    ) -> list[tuple[int, int]] | None:
        """The version of ``key`` in force at ``ts``: its (from_input_tokens,
        entry id) pairs, smallest prompts first; None before the first."""
        found = self._index.get(key)
        if found is None:
            return None
        starts, versions = found
        i = bisect_right(starts, ts)
        return versions[i - 1] if i else None

    def resolve(
        self, model: str, provider: str, region: str | None, tier: str, ts: datetime
    ) -> tuple[list[tuple[int, int]], bool] | None:
        """The version in force for an event, and whether the batch discount
        applies to it (a batch call with no batch-tier price)."""
        for r, t, discounted in fallbacks(region, tier):
            version = self.version_at((model, provider, r, t), ts)
            if version is not None:
                return version, discounted
        return None

    def rate(
        self,
        model: str,
        provider: str,
        ts: datetime,
        *,
        region: str | None = None,
        tier: str = STANDARD,
        input_tokens: int = 0,
    ) -> Rate | None:
        """The rate of one event, or None when its model has no price yet."""
        found = self.resolve(model, provider, region, tier, ts)
        if found is None:
            return None
        version, discounted = found
        price_id = tier_of(version, input_tokens)
        listed = price_id
        if tier != STANDARD:
            standard = self.resolve(model, provider, region, STANDARD, ts)
            if standard is not None:
                listed = tier_of(standard[0], input_tokens)
        return Rate(price_id, discounted, listed)

    def price_at(self, model: str, provider: str, ts: datetime) -> PriceEntry | None:
        """The standard, regionless entry for the smallest prompts in force at
        ``ts`` (what a cache hit is valued at), or None."""
        version = self.version_at((model, provider, "", STANDARD), ts)
        return self.entries[version[0][1]] if version else None

    def __len__(self) -> int:
        return len(self.entries)


def fallbacks(region: str | None, tier: str) -> list[tuple[str, str, bool]]:
    """The (region, tier) keys an event of ``region`` and ``tier`` is priced
    at, in the order tried, and whether each takes the batch discount off:
    its region before the regionless entry, its tier before the standard."""
    return [
        (r, t, tier == BATCH and t == STANDARD)
        for r in ((region, "") if region else ("",))
        for t in ((tier, STANDARD) if tier != STANDARD else (STANDARD,))
    ]


def tier_of(version: list[tuple[int, int]], input_tokens: int) -> int:
    """The entry of ``version`` (sorted ``(from_input_tokens, id)``) that prices
    a prompt of ``input_tokens``; the first one below every threshold."""
    i = bisect_right(version, (input_tokens, 2**63)) - 1
    return version[max(i, 0)][1]


def _row(raw: Mapping[str, str]) -> dict[str, str]:
    """A CSV row with empty optional cells left out (so they take defaults)."""
    return {k.strip(): v.strip() for k, v in raw.items() if v is not None and v.strip() != ""}


def parse_csv(text: str) -> list[PriceEntry]:
    """Entries of a price CSV: the v2 header (:data:`CSV_HEADER`) or the v1
    one (:data:`CSV_HEADER_V1`: no region, tiers or thresholds)."""
    reader = csv.DictReader(io.StringIO(text))
    names = [f.strip() for f in reader.fieldnames or []]
    if names not in (CSV_HEADER.split(","), CSV_HEADER_V1.split(",")):
        raise ValueError(f"price CSV header must be exactly: {CSV_HEADER} (or v1: {CSV_HEADER_V1})")
    entries = []
    for line, row in enumerate(reader, start=2):
        try:
            entries.append(PriceEntry.model_validate(_row(row)))
        except ValueError as exc:
            raise ValueError(f"price CSV line {line}: {exc}") from exc
    return entries


def parse_yaml(text: str) -> list[PriceEntry]:
    """A list of entries, or a mapping with a ``prices`` list.

    Loaded with YAML's base loader, so every scalar stays a string and a price
    such as 0.1 never passes through a binary float.
    """
    doc = yaml.load(text, Loader=yaml.BaseLoader)
    rows = doc.get("prices") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ValueError("price YAML must be a list of entries or have a 'prices' list")
    entries = []
    for i, row in enumerate(rows):
        try:
            entries.append(PriceEntry.model_validate(row))
        except ValueError as exc:
            raise ValueError(f"price YAML entry {i}: {exc}") from exc
    return entries


def to_csv(entries: list[PriceEntry]) -> str:
    """Entries as a v2 price CSV (what ``parse_csv`` reads back)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = (*ENTRY_KEY, *RATES)
    writer.writerow(columns)
    for e in entries:
        row = e.model_dump()
        writer.writerow(
            [
                row[c].isoformat() if c == "effective_from" else "" if row[c] is None else row[c]
                for c in columns
            ]
        )
    return out.getvalue()
