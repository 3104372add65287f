"""The spend windows: per minute (partitioned by month) and their hourly
and daily roll-ups, which hold the same columns summed."""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, Index, Table, Text, func

from models.money import KINDS
from models.schema import TS, count_column, metadata, money_column

# The effective cost of each token kind (models.money.KINDS) in a window; they
# add up to cost_usd. output_cost_usd is of the output other than reasoning.
KIND_COSTS: Final = tuple(f"{kind}_cost_usd" for kind in KINDS)

spend_window = Table(
    "spend_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("route", Text, primary_key=True),
    Column("feature", Text, primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    count_column("attempts"),
    count_column("requests"),
    count_column("retry_attempts"),
    count_column("failed_attempts"),
    count_column("unpriced_attempts"),
    count_column("input_tokens"),
    count_column("output_tokens"),
    count_column("cache_read_tokens"),
    count_column("cache_write_tokens"),
    money_column("cost_usd"),
    money_column("retry_cost_usd"),
    money_column("failed_cost_usd"),
    # Inputs of the anomaly rules (pipeline/spend/windows.py says what each is).
    count_column("invalid_attempts"),
    money_column("invalid_cost_usd"),
    count_column("fallback_attempts"),
    count_column("drift_attempts"),
    count_column("drift_billed_tokens"),
    count_column("drift_abs_tokens"),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    # For chargeback (migration 0011): the cost at list price (no batch
    # discount), of the retries at list price, and of the failed first
    # attempts at effective and list price.
    money_column("list_cost_usd"),
    money_column("retry_list_cost_usd"),
    money_column("failed_first_cost_usd"),
    money_column("failed_first_list_cost_usd"),
    # Price book v2 (migration 0015): 1h cache writes and reasoning tokens,
    # parts of cache_write_tokens and output_tokens, and cost_usd by kind.
    count_column("cache_write_1h_tokens"),
    count_column("reasoning_tokens"),
    *(money_column(c) for c in KIND_COSTS),
    # Roll-ups by tenant over time ranges are the common report query.
    Index("spend_window_tenant_time", "tenant", "window_start"),
    # One partition a month (pipeline/storage/partitions.py): minute
    # retention drops whole months.
    postgresql_partition_by="RANGE (window_start)",
)


def _rollup(name: str) -> Table:
    """spend_window summed by the hour or the day (``window_start`` is the
    hour's or the UTC day's start), kept by triggers of migration 0017 in
    the transaction of every write of the minutes; dropping minutes never
    changes it."""
    return Table(
        name,
        metadata,
        *(c._copy() for c in spend_window.columns if c.name != "updated_at"),
        Index(f"{name}_tenant_time", "tenant", "window_start"),
    )


spend_window_hour = _rollup("spend_window_hour")
spend_window_day = _rollup("spend_window_day")
