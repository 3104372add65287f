"""The versioned price book: entries with effective dates, and their parsers.

A price applies from its ``effective_from`` until the next entry for the same
(model, provider) takes over, so loading a new price never rewrites the cost
of events that happened before it. Parsers take text, not paths: reading
files is the caller's job.
"""

from __future__ import annotations

import csv
import io
import json
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from models.money import DISCOUNT_DECIMALS, PRICE_DECIMALS, check_scale, token_cost

CSV_HEADER = (
    "model,provider,effective_from,input_per_mtok,output_per_mtok,"
    "cache_read_per_mtok,cache_write_per_mtok,batch_discount"
)


def _price(v: Decimal) -> Decimal:
    if v < 0:
        raise ValueError("a price must not be negative")
    return check_scale(v, PRICE_DECIMALS, "price per Mtok")


def _discount(v: Decimal) -> Decimal:
    if not Decimal(0) <= v <= Decimal(1):
        raise ValueError("batch_discount must be between 0 and 1")
    return check_scale(v, DISCOUNT_DECIMALS, "batch_discount")


Price = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_price)]
Discount = Annotated[Decimal, Field(allow_inf_nan=False), AfterValidator(_discount)]


class PriceEntry(BaseModel):
    """USD per million tokens for one (model, provider) from ``effective_from``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Annotated[str, Field(min_length=1, pattern=r"\S")]
    provider: Annotated[str, Field(min_length=1, pattern=r"\S")]
    effective_from: AwareDatetime
    input_per_mtok: Price
    output_per_mtok: Price
    cache_read_per_mtok: Price
    cache_write_per_mtok: Price
    batch_discount: Discount = Decimal(0)
    currency: Annotated[str, Field(pattern=r"^USD$")] = "USD"

    def cost(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        batch: bool,
    ) -> Decimal:
        return token_cost(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok,
            cache_read_per_mtok=self.cache_read_per_mtok,
            cache_write_per_mtok=self.cache_write_per_mtok,
            batch_discount=self.batch_discount,
            batch=batch,
        )


@dataclass(frozen=True)
class PriceBook:
    """An immutable snapshot of all price versions, with as-of lookup."""

    entries: tuple[PriceEntry, ...] = ()
    _index: dict[tuple[str, str], tuple[list[datetime], list[PriceEntry]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], tuple[list[datetime], list[PriceEntry]]] = {}
        for e in sorted(self.entries, key=lambda e: (e.model, e.provider, e.effective_from)):
            starts, versions = index.setdefault((e.model, e.provider), ([], []))
            starts.append(e.effective_from)
            versions.append(e)
        object.__setattr__(self, "_index", index)

    def price_at(self, model: str, provider: str, ts: datetime) -> PriceEntry | None:
        """The entry in force at ``ts``, or None when the model has no price yet."""
        found = self._index.get((model, provider))
        if found is None:
            return None
        starts, versions = found
        i = bisect_right(starts, ts)
        return versions[i - 1] if i else None

    def __len__(self) -> int:
        return len(self.entries)


def parse_csv(text: str) -> list[PriceEntry]:
    reader = csv.DictReader(io.StringIO(text))
    expected = CSV_HEADER.split(",")
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != expected:
        raise ValueError(f"price CSV header must be exactly: {CSV_HEADER}")
    entries = []
    for line, row in enumerate(reader, start=2):
        try:
            entries.append(
                PriceEntry.model_validate({k.strip(): v.strip() for k, v in row.items()})
            )
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


@dataclass(frozen=True)
class LiteLLMImport:
    entries: list[PriceEntry]
    skipped: dict[str, str]


def parse_litellm(text: str, effective_from: datetime) -> LiteLLMImport:
    """Read LiteLLM's ``model_prices_and_context_window.json``.

    Its prices are USD per token written as JSON numbers; they are parsed as
    ``Decimal`` straight from the text (never as floats) and scaled to per-Mtok.
    The batch discount is derived from ``input_cost_per_token_batches``.
    Entries without token prices (image, audio, embedding-only) are skipped
    and reported.
    """
    doc: Mapping[str, Any] = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    entries: list[PriceEntry] = []
    skipped: dict[str, str] = {}
    for name, spec in doc.items():
        if name == "sample_spec" or not isinstance(spec, Mapping):
            continue
        inp, out = spec.get("input_cost_per_token"), spec.get("output_cost_per_token")
        if not isinstance(inp, Decimal) or not isinstance(out, Decimal):
            skipped[name] = "no per-token input and output price"
            continue
        try:
            read = spec.get("cache_read_input_token_cost", inp)
            write = spec.get("cache_creation_input_token_cost", inp)
            batch_in = spec.get("input_cost_per_token_batches")
            discount = Decimal(0)
            if isinstance(batch_in, Decimal) and inp > 0:
                discount = (1 - batch_in / inp).quantize(Decimal("0.0001"))
            entries.append(
                PriceEntry(
                    model=name,
                    provider=str(spec.get("litellm_provider") or "unknown"),
                    effective_from=effective_from,
                    input_per_mtok=_per_mtok(inp),
                    output_per_mtok=_per_mtok(out),
                    cache_read_per_mtok=_per_mtok(read),
                    cache_write_per_mtok=_per_mtok(write),
                    batch_discount=discount,
                )
            )
        except (ValueError, InvalidOperation, TypeError) as exc:
            skipped[name] = str(exc).splitlines()[0]
    return LiteLLMImport(entries, skipped)


def _per_mtok(per_token: Any) -> Decimal:
    return (Decimal(per_token) * 1_000_000).normalize()
