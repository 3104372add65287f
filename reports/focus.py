"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) rows for a month.

One row per charge: per UTC day, tenant, route, feature, provider, model,
price version and token kind (uncached input, output, cache read, cache
write), ChargeCategory ``Usage``; and one row per adjustment line of the
month's chargeback (late usage of an earlier closed month), ChargeCategory
``Adjustment`` with ChargeClass ``Correction`` and the charge period of the
month it belongs to. Tokens are the ConsumedQuantity (unit ``Tokens``) and,
in millions, the PricingQuantity (unit ``1M Tokens``) at the price book's
per-million price, so ListCost = ListUnitPrice x PricingQuantity exactly.
A group's effective cost (after batch discounts) is split over its token
kinds in proportion to their list cost, at 16 decimal places, the largest
kind taking the remainder, so the kinds add up to the group exactly.
Shared-cost allocations are internal chargeback, not provider charges, and
are not FOCUS rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

import polars as pl
from sqlalchemy import Connection, text

from models.money import MTOK, exact
from models.months import bounds, midnight, next_month
from pipeline.finance.lines import Line

VERSION: Final = "1.2"
MONEY: Final = pl.Decimal(38, 16)
QUANTITY: Final = pl.Decimal(38, 6)
TS: Final = pl.Datetime("us", "UTC")
# The columns of FOCUS 1.2, in the specification's order, with their types.
COLUMNS: Final[dict[str, Any]] = {
    "AvailabilityZone": pl.String,
    "BilledCost": MONEY,
    "BillingAccountId": pl.String,
    "BillingAccountName": pl.String,
    "BillingAccountType": pl.String,
    "BillingCurrency": pl.String,
    "BillingPeriodEnd": TS,
    "BillingPeriodStart": TS,
    "CapacityReservationId": pl.String,
    "CapacityReservationStatus": pl.String,
    "ChargeCategory": pl.String,
    "ChargeClass": pl.String,
    "ChargeDescription": pl.String,
    "ChargeFrequency": pl.String,
    "ChargePeriodEnd": TS,
    "ChargePeriodStart": TS,
    "CommitmentDiscountCategory": pl.String,
    "CommitmentDiscountId": pl.String,
    "CommitmentDiscountName": pl.String,
    "CommitmentDiscountQuantity": QUANTITY,
    "CommitmentDiscountStatus": pl.String,
    "CommitmentDiscountType": pl.String,
    "CommitmentDiscountUnit": pl.String,
    "ConsumedQuantity": QUANTITY,
    "ConsumedUnit": pl.String,
    "ContractedCost": MONEY,
    "ContractedUnitPrice": MONEY,
    "EffectiveCost": MONEY,
    "InvoiceId": pl.String,
    "InvoiceIssuerName": pl.String,
    "ListCost": MONEY,
    "ListUnitPrice": MONEY,
    "PricingCategory": pl.String,
    "PricingCurrency": pl.String,
    "PricingCurrencyContractedUnitPrice": MONEY,
    "PricingCurrencyEffectiveCost": MONEY,
    "PricingCurrencyListUnitPrice": MONEY,
    "PricingQuantity": QUANTITY,
    "PricingUnit": pl.String,
    "ProviderName": pl.String,
    "PublisherName": pl.String,
    "RegionId": pl.String,
    "RegionName": pl.String,
    "ResourceId": pl.String,
    "ResourceName": pl.String,
    "ResourceType": pl.String,
    "ServiceCategory": pl.String,
    "ServiceName": pl.String,
    "ServiceSubcategory": pl.String,
    "SkuId": pl.String,
    "SkuMeter": pl.String,
    "SkuPriceDetails": pl.String,
    "SkuPriceId": pl.String,
    "SubAccountId": pl.String,
    "SubAccountName": pl.String,
    "SubAccountType": pl.String,
    "Tags": pl.String,
}
KINDS: Final = (
    ("input", "Input tokens", "input_per_mtok"),
    ("output", "Output tokens", "output_per_mtok"),
    ("cache-read", "Cache read tokens", "cache_read_per_mtok"),
    ("cache-write", "Cache write tokens", "cache_write_per_mtok"),
)
PLACES: Final = Decimal("1e-16")

# Spend per day, key and price version: the price in force at each window.
_GROUPS: Final = """
SELECT (s.window_start AT TIME ZONE 'UTC')::date AS day, s.tenant, s.route, s.feature,
       s.provider, s.model, p.id AS price_id, p.input_per_mtok, p.output_per_mtok,
       p.cache_read_per_mtok, p.cache_write_per_mtok,
       sum(s.input_tokens - s.cache_read_tokens - s.cache_write_tokens) AS input,
       sum(s.output_tokens) AS output, sum(s.cache_read_tokens) AS cache_read,
       sum(s.cache_write_tokens) AS cache_write, sum(s.cost_usd) AS cost
FROM spend_window s
LEFT JOIN LATERAL (
    SELECT * FROM price_book b WHERE b.model = s.model AND b.provider = s.provider
      AND b.effective_from <= s.window_start ORDER BY b.effective_from DESC LIMIT 1
) p ON true
WHERE s.window_start >= :s AND s.window_start < :e
GROUP BY day, s.tenant, s.route, s.feature, s.provider, s.model, p.id, p.input_per_mtok,
         p.output_per_mtok, p.cache_read_per_mtok, p.cache_write_per_mtok
ORDER BY day, s.tenant, s.route, s.feature, s.provider, s.model, p.id
"""


def _split(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """``total`` over ``weights`` in proportion, at 16 places, the largest
    weight taking the remainder: the parts add up to ``total`` exactly, and
    a zero weight gets exactly zero."""
    whole = sum(weights, Decimal(0))
    largest = max(range(len(weights)), key=lambda i: weights[i])
    if not whole:
        return [total if i == largest else Decimal(0) for i in range(len(weights))]
    parts = [(total * w / whole).quantize(PLACES, ROUND_DOWN) for w in weights]
    with exact():
        parts[largest] += total - sum(parts, Decimal(0))
    return parts


def _base(m: date, tenant: str) -> dict[str, Any]:
    return {c: None for c in COLUMNS} | {
        "BillingAccountId": tenant,
        "BillingAccountName": tenant,
        "BillingAccountType": "Cost Centre",
        "BillingCurrency": "USD",
        "BillingPeriodStart": midnight(m),
        "BillingPeriodEnd": midnight(next_month(m)),
        "ChargeFrequency": "Usage-Based",
        "InvoiceId": f"{m:%Y-%m}/{tenant}",
        "InvoiceIssuerName": "finops internal chargeback",
        "PricingCurrency": "USD",
        "ServiceCategory": "AI and Machine Learning",
        "ServiceSubcategory": "Generative AI",
    }


def usage_rows(conn: Connection, m: date) -> list[dict[str, Any]]:
    start, end = bounds(m)
    rows = []
    for g in conn.execute(text(_GROUPS), {"s": start, "e": end}).mappings():
        if g["price_id"] is None:
            continue  # unpriced: no cost yet (its windows count it as unpriced_attempts)
        tokens = [int(g[k.replace("-", "_")]) for k, _, _ in KINDS]
        prices = [Decimal(g[p]) for _, _, p in KINDS]
        with exact():
            lists = [Decimal(t) / MTOK * p for t, p in zip(tokens, prices, strict=True)]
        effective = _split(Decimal(g["cost"]), lists)
        tags = json.dumps(
            {"tenant": g["tenant"], "route": g["route"], "feature": g["feature"]}, sort_keys=True
        )
        for (kind, title, _), n, price, lst, eff in zip(
            KINDS, tokens, prices, lists, effective, strict=True
        ):
            if not n and not eff:
                continue
            sku = f"{g['provider']}/{g['model']}/{kind}"
            rows.append(
                _base(m, g["tenant"])
                | {
                    "BilledCost": eff,
                    "ChargeCategory": "Usage",
                    "ChargeDescription": f"{title} of {g['model']} ({g['provider']})",
                    "ChargePeriodStart": midnight(g["day"]),
                    "ChargePeriodEnd": midnight(g["day"] + timedelta(days=1)),
                    "ConsumedQuantity": Decimal(n),
                    "ConsumedUnit": "Tokens",
                    "ContractedCost": lst,
                    "ContractedUnitPrice": price,
                    "EffectiveCost": eff,
                    "ListCost": lst,
                    "ListUnitPrice": price,
                    "PricingCategory": "Standard",
                    "PricingCurrencyContractedUnitPrice": price,
                    "PricingCurrencyEffectiveCost": eff,
                    "PricingCurrencyListUnitPrice": price,
                    "PricingQuantity": Decimal(n) / MTOK,
                    "PricingUnit": "1M Tokens",
                    "ProviderName": g["provider"],
                    "PublisherName": g["provider"],
                    "ResourceId": f"{g['provider']}/{g['model']}",
                    "ResourceName": g["model"],
                    "ResourceType": "Model",
                    "ServiceName": f"{g['provider']} models",
                    "SkuId": sku,
                    "SkuMeter": title,
                    "SkuPriceId": f"{sku}@{g['price_id']}",
                    "SkuPriceDetails": json.dumps({"TokenKind": kind}),
                    "SubAccountId": g["route"],
                    "SubAccountName": g["feature"],
                    "SubAccountType": "Route",
                    "Tags": tags,
                }
            )
    return rows


def adjustment_rows(m: date, lines: Sequence[Line]) -> list[dict[str, Any]]:
    rows = []
    for x in lines:
        if x.kind != "adjustment" or x.adjusts is None:
            continue
        rows.append(
            _base(m, x.tenant)
            | {
                "BilledCost": x.effective_cost,
                "ChargeCategory": "Adjustment",
                "ChargeClass": "Correction",
                "ChargeDescription": f"{x.description}: {x.model} on {x.route} ({x.feature})",
                "ChargePeriodStart": midnight(x.adjusts),
                "ChargePeriodEnd": midnight(next_month(x.adjusts)),
                "ContractedCost": x.list_cost,
                "EffectiveCost": x.effective_cost,
                "ListCost": x.list_cost,
                "PricingCurrencyEffectiveCost": x.effective_cost,
                "ProviderName": x.provider,
                "PublisherName": x.provider,
                "ResourceId": f"{x.provider}/{x.model}",
                "ResourceName": x.model,
                "ResourceType": "Model",
                "ServiceName": f"{x.provider} models",
                "SubAccountId": x.route,
                "SubAccountName": x.feature,
                "SubAccountType": "Route",
                "Tags": json.dumps(
                    {"tenant": x.tenant, "route": x.route, "feature": x.feature}, sort_keys=True
                ),
            }
        )
    return rows


def frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=COLUMNS, orient="row")


def to_csv(df: pl.DataFrame) -> bytes:
    return df.write_csv(datetime_format="%Y-%m-%dT%H:%M:%SZ").encode()


def to_parquet(df: pl.DataFrame) -> bytes:
    import io

    out = io.BytesIO()
    df.write_parquet(out, statistics=False)
    return out.getvalue()
