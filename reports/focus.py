"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) rows for a month.

One row per charge: per UTC day, tenant, route, feature, provider, model,
price version and token kind (uncached input, cache read, 5-minute and
1-hour cache writes, output and reasoning, each its own SKU),
ChargeCategory ``Usage``; and one row per adjustment line of the
month's chargeback (late usage of an earlier closed month), ChargeCategory
``Adjustment`` with ChargeClass ``Correction`` and the charge period of the
month it belongs to. Tokens are the ConsumedQuantity (unit ``Tokens``) and,
in millions, the PricingQuantity (unit ``1M Tokens``) at the rate card's
per-million price (the book's standard, regionless entry for the smallest
prompts), so ListCost = ListUnitPrice x PricingQuantity exactly. The
EffectiveCost is what the windows hold for that kind, exactly: service
tiers, long-context rates and batch discounts are its difference to the
list cost.
Shared-cost allocations are internal chargeback, not provider charges, and
are not FOCUS rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
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
# Each token kind: its SKU suffix, meter, tokens (a SQL sum over the windows),
# effective cost column (models.money.KINDS) and the list rate it has on the
# book's rate card (the standard, regionless entry for the smallest prompts).
KINDS: Final = (
    ("input", "Input tokens", "s.input_tokens - s.cache_read_tokens - s.cache_write_tokens",
     "input_cost_usd", "p.input_per_mtok"),
    ("cache-read", "Cache read tokens", "s.cache_read_tokens", "cache_read_cost_usd",
     "p.cache_read_per_mtok"),
    ("cache-write", "Cache write tokens (5 minutes)",
     "s.cache_write_tokens - s.cache_write_1h_tokens", "cache_write_5m_cost_usd",
     "p.cache_write_per_mtok"),
    ("cache-write-1h", "Cache write tokens (1 hour)", "s.cache_write_1h_tokens",
     "cache_write_1h_cost_usd", "coalesce(p.cache_write_1h_per_mtok, p.cache_write_per_mtok)"),
    ("output", "Output tokens", "s.output_tokens - s.reasoning_tokens", "output_cost_usd",
     "p.output_per_mtok"),
    ("reasoning", "Reasoning tokens", "s.reasoning_tokens", "reasoning_cost_usd",
     "coalesce(p.reasoning_per_mtok, p.output_per_mtok)"),
)  # fmt: skip

# Spend per day, key and kind, with the kind's rate-card price in force.
_GROUPS: Final = f"""
SELECT (s.window_start AT TIME ZONE 'UTC')::date AS day, s.tenant, s.route, s.feature,
       s.provider, s.model, p.id AS price_id,
       {", ".join(f"{rate} AS rate_{i}" for i, (*_, rate) in enumerate(KINDS))},
       {", ".join(f"sum({n}) AS tokens_{i}" for i, (_, _, n, _, _) in enumerate(KINDS))},
       {", ".join(f"sum(s.{c}) AS cost_{i}" for i, (_, _, _, c, _) in enumerate(KINDS))}
FROM spend_window s
LEFT JOIN LATERAL (
    SELECT * FROM price_book b WHERE b.model = s.model AND b.provider = s.provider
      AND b.region = '' AND b.service_tier = 'standard'
      AND b.effective_from <= s.window_start
    ORDER BY b.effective_from DESC, b.from_input_tokens LIMIT 1
) p ON true
WHERE s.window_start >= :s AND s.window_start < :e AND s.attempts > s.unpriced_attempts
GROUP BY day, s.tenant, s.route, s.feature, s.provider, s.model, p.id,
         {", ".join(f"rate_{i}" for i in range(len(KINDS)))}
ORDER BY day, s.tenant, s.route, s.feature, s.provider, s.model, p.id
"""


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
        tags = json.dumps(
            {"tenant": g["tenant"], "route": g["route"], "feature": g["feature"]}, sort_keys=True
        )
        for i, (kind, title, _, _, _) in enumerate(KINDS):
            n, eff = int(g[f"tokens_{i}"]), Decimal(g[f"cost_{i}"])
            if not n and not eff:
                continue
            rate = g[f"rate_{i}"]
            price = None if rate is None else Decimal(rate)
            with exact():
                # At the rate card's price: what the tokens list at. Tiers,
                # long-context rates and batch discounts are the difference
                # to the effective cost. A model with regional prices only
                # has no card: its list cost is its cost.
                lst = eff if price is None else Decimal(n) / MTOK * price
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
                    "SkuPriceId": f"{sku}@{g['price_id']}" if g["price_id"] else None,
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
