"""Everything stored, as SQLAlchemy 2 tables on one ``metadata``
(``models/schema.py``; the pages' access tables are in ``web_tables.py``).
The schema itself is created only by the Alembic migrations in
``migrations/``; a test checks they agree."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from models import (  # noqa: F401  (register their tables on the metadata)
    ingest_tables,
    spend_tables,
    web_tables,
)
from models.money import DISCOUNT_DECIMALS
from models.schema import MONEY, PRICE, TS, count_column, metadata, money_column

price_book = Table(
    "price_book",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("model", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("effective_from", TS, nullable=False),
    Column("input_per_mtok", PRICE, nullable=False),
    Column("output_per_mtok", PRICE, nullable=False),
    Column("cache_read_per_mtok", PRICE, nullable=False),
    Column("cache_write_per_mtok", PRICE, nullable=False),
    Column("batch_discount", Numeric(5, DISCOUNT_DECIMALS), nullable=False),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("source", Text, nullable=False),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
    # Price book v2 (migration 0015; models/prices.py says what each means).
    Column("region", Text, nullable=False, server_default=""),
    Column("service_tier", Text, nullable=False, server_default="standard"),
    Column("from_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_write_1h_per_mtok", PRICE, nullable=True),
    Column("reasoning_per_mtok", PRICE, nullable=True),
    UniqueConstraint(
        "model",
        "provider",
        "region",
        "service_tier",
        "from_input_tokens",
        "effective_from",
        name="price_book_version",
    ),
)


# Events whose model had no price: kept with what repricing needs, so a price
# loaded later can fix their windows exactly.
unpriced_event = Table(
    "unpriced_event",
    metadata,
    Column("event_key", Uuid, primary_key=True),
    Column("ts", TS, nullable=False),
    Column("window_start", TS, nullable=False),
    Column("tenant", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("feature", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("failed", Boolean, nullable=False),
    Column("invalid", Boolean, nullable=False, server_default="false"),
    Column("batch", Boolean, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("cache_write_1h_tokens", BigInteger, nullable=False, server_default="0"),
    Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
    Column("region", Text, nullable=False, server_default=""),
    Column("service_tier", Text, nullable=False, server_default="standard"),
    Index("unpriced_event_model", "model", "provider"),
)

# The dedup record, kept permanently behind its primary key: event_key is
# md5(tenant, node_id, event_id), fingerprint the md5 of the canonical
# payload, so a re-send is a duplicate and a different payload a conflict.
# (Rows written before migration 0002 have no fingerprint and were keyed by
# event_id alone.)
# Partitioned by event day (migration 0017): retention drops the days past
# the dedup horizon. A re-send has the payload, so the day, of the original.
seen_event = Table(
    "seen_event",
    metadata,
    Column("event_key", Uuid, primary_key=True),
    Column("event_ts", TS, nullable=False),
    Column("fingerprint", Uuid, nullable=True),
    Column("event_day", Date, primary_key=True),
    postgresql_partition_by="RANGE (event_day)",
)

# The sink's own offsets, written in the same transaction as the sums they
# produced: the source of truth for what has been applied.
sink_offset = Table(
    "sink_offset",
    metadata,
    Column("sink", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    count_column("events_accepted"),
    count_column("events_duplicate"),
    count_column("lines_dead_lettered"),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    # Bumped by each worker that is assigned the partition; a batch is applied
    # only by the worker holding the current epoch (zombie fencing).
    Column("owner_epoch", BigInteger, nullable=False, server_default="0"),
    # The newest event time applied from the partition: the minimum over the
    # partitions is the watermark that closes minutes for the anomaly rules.
    Column("max_event_ts", TS, nullable=True),
)

dead_letter = Table(
    "dead_letter",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("line", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("received_at", TS, nullable=False, server_default=func.now()),
    # Set when `finops dead-letters replay` re-published the line.
    Column("replayed_at", TS, nullable=True),
    UniqueConstraint("topic", "partition", "offset", "line", name="dead_letter_position"),
)


# --- energy and cache attribution (issue 5) ---------------------------------

_ENERGY_KEY = ("model", "tenant", "route", "feature", "batch_bucket", "cache_state")

# Usage on self-hosted nodes, summed per batch, node-window and attribution
# key with its attribution weight; written in the spend transaction, so
# exactly once. Append-only (a plain COPY on the spend path instead of an
# upsert): the finalizer sums a window's rows and folds them into one per key
# when it splits the window.
energy_usage = Table(
    "energy_usage",
    metadata,
    Column("window_start", TS, nullable=False),
    Column("node_id", Text, nullable=False),
    *(Column(k, Text, nullable=False) for k in _ENERGY_KEY),
    count_column("attempts"),
    count_column("input_tokens"),
    count_column("output_tokens"),
    count_column("cache_read_tokens"),
    count_column("weight"),
    Index("energy_usage_node_window", "window_start", "node_id"),
)

# Measured energy per node and minute (integer millijoules), and its split.
node_energy_window = Table(
    "node_energy_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("node_id", Text, primary_key=True),
    count_column("measured_mj"),
    count_column("unmeasured_ms"),
    count_column("attributed_mj"),
    count_column("idle_mj"),
    # Split into energy_window; cleared when late usage or telemetry arrives,
    # so the finalizer splits it again (each re-split counts in `splits`).
    Column("final", Boolean, nullable=False, server_default="false"),
    count_column("splits"),
    Index("node_energy_window_open", "final", postgresql_where=text("NOT final")),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

# The last sample seen per GPU: the start of the next measured interval.
gpu_last_sample = Table(
    "gpu_last_sample",
    metadata,
    Column("node_id", Text, primary_key=True),
    Column("gpu", Text, primary_key=True),
    Column("ts", TS, nullable=False),
    Column("power_w", Numeric(12, 3), nullable=False),
    Column("energy_mj", BigInteger, nullable=True),
)

# Energy per attribution key: measured (a node-window's split) or estimated
# (external APIs, from the per-model coefficient table), never mixed.
energy_window = Table(
    "energy_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("node_id", Text, primary_key=True),
    *(Column(k, Text, primary_key=True) for k in _ENERGY_KEY),
    Column("source", Text, primary_key=True),  # measured | estimated
    count_column("attempts"),
    count_column("input_tokens"),
    count_column("output_tokens"),
    count_column("cache_read_tokens"),
    count_column("energy_mj"),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

cache_window = Table(
    "cache_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("route", Text, primary_key=True),
    Column("layer", Text, primary_key=True),
    # The model the cache fronts ('' when the event did not say), for pricing.
    Column("model", Text, primary_key=True, server_default=""),
    Column("provider", Text, primary_key=True, server_default=""),
    count_column("hits"),
    count_column("misses"),
    count_column("hit_tokens"),
    count_column("miss_tokens"),
    count_column("inserts"),
    count_column("hit_output_tokens"),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

cache_eviction_window = Table(
    "cache_eviction_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("evicting_tenant", Text, primary_key=True),
    Column("evicted_tenant", Text, primary_key=True),
    Column("layer", Text, primary_key=True),
    Column("model", Text, primary_key=True, server_default=""),
    Column("provider", Text, primary_key=True, server_default=""),
    count_column("evictions"),
    count_column("evicted_tokens"),
    count_column("evicted_output_tokens"),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

# Carbon reference data, loaded like prices: a version is never rewritten.
GRAMS: Final = Numeric(14, 3)

grid_intensity = Table(
    "grid_intensity",
    metadata,
    Column("region", Text, primary_key=True),
    Column("effective_from", TS, primary_key=True),
    Column("gco2e_per_kwh", GRAMS, nullable=False),
    Column("source", Text, nullable=False),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
)

gpu_embodied = Table(
    "gpu_embodied",
    metadata,
    Column("gpu_type", Text, primary_key=True),
    Column("embodied_kgco2e", GRAMS, nullable=False),
    Column("lifetime_hours", Integer, nullable=False),
    Column("tdp_w", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
)

# Where energy is drawn: serving nodes by node_id pattern (measured energy),
# external API models by model pattern (estimated energy). Most specific wins.
carbon_site = Table(
    "carbon_site",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("pattern", Text, primary_key=True),
    Column("region", Text, nullable=False),
    Column("gpu_type", Text, nullable=False),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
)

# The route catalog and the rules' settings (models/catalog.py), as loaded.
route_catalog = Table(
    "route_catalog",
    metadata,
    Column("route", Text, primary_key=True),
    Column("input_cap", Integer, nullable=False),
    Column("output_cap", Integer, nullable=False),
    Column("hard_cap_action", Text, nullable=False),
    Column("p50_ms", Integer, nullable=False),
    Column("p95_ms", Integer, nullable=False),
    Column("p99_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("max_retries", Integer, nullable=False),
    Column("fallback_model", Text, nullable=True),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
)

alert_rule = Table(
    "alert_rule",
    metadata,
    Column("rule", Text, primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("severity", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("loaded_at", TS, nullable=False, server_default=func.now()),
)

# One row per firing episode; at most one firing row per dedup key.
alert = Table(
    "alert",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("dedup_key", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("subject", ARRAY(Text), nullable=False),
    Column("tenant", Text, nullable=True),
    Column("severity", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("value", Numeric, nullable=False),
    Column("threshold", Numeric, nullable=False),
    Column("summary", Text, nullable=False),
    Column("contributors", JSONB, nullable=False),
    Column("window_start", TS, nullable=False),
    Column("fired_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("resolved_at", TS, nullable=True),
    Column("notified_at", TS, nullable=True),
    Column("acked_at", TS, nullable=True),
    Column("acked_by", Text, nullable=True),
    Index(
        "alert_one_firing",
        "dedup_key",
        unique=True,
        postgresql_where=text("status = 'firing'"),
    ),
    Index("alert_by_tenant", "tenant", "fired_at"),
)

# The last closed minute the rules were evaluated through.
alert_watermark = Table(
    "alert_watermark",
    metadata,
    Column("evaluator", Text, primary_key=True),
    Column("evaluated_through", TS, nullable=False),
)

# Latency histograms per minute, route and model: calls per bucket of
# pipeline.spend.latency.BOUNDS_MS (5% apart), so percentiles merge across windows.
latency_window = Table(
    "latency_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("route", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("bucket", SmallInteger, primary_key=True),
    count_column("calls"),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

# Attempts over their route's token caps (pipeline/spend/budgets.py), for the
# token_budget_breach rule.
budget_window = Table(
    "budget_window",
    metadata,
    Column("window_start", TS, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("route", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    count_column("over_input"),
    count_column("over_output"),
    count_column("over_tokens"),
    postgresql_partition_by="RANGE (window_start)",  # by month (migration 0018)
)

# The running retry cost of each retried request (attempts after the first),
# for the runaway-request rule.
request_cost = Table(
    "request_cost",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("request_id", Text, primary_key=True),
    Column("route", Text, nullable=False),
    Column("first_ts", TS, nullable=False),
    Column("last_ts", TS, nullable=False),
    count_column("retries"),
    money_column("retry_cost_usd"),
    Index("request_cost_active", "last_ts"),
)

# A closed month (migration 0011): its lines and rendered documents, which a
# trigger keeps from ever changing.
month_close = Table(
    "month_close",
    metadata,
    Column("month", Date, primary_key=True),
    Column("closed_at", TS, nullable=False),
    Column("policy", JSONB, nullable=False),
    Column("rounding", Text, nullable=False),
    Column("total", Numeric(14, 2), nullable=False),
)

invoice_line = Table(
    "invoice_line",
    metadata,
    Column("month", Date, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("feature", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("list_cost", MONEY, nullable=False),
    Column("effective_cost", MONEY, nullable=False),
    Column("amount", Numeric(14, 2), nullable=False),
    Column("adjusts", Date, nullable=True),
    Index("invoice_line_adjusts", "adjusts"),
)

invoice_document = Table(
    "invoice_document",
    metadata,
    Column("month", Date, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("format", Text, primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", Text, nullable=False),
)

demo_run = Table(
    "demo_run",
    metadata,
    Column("hour", TS, primary_key=True),
    Column("rate", Numeric, nullable=False),
    Column("incident", Text, nullable=True),
    Column("claimed_at", TS, nullable=False, server_default=func.now()),
    Column("published_at", TS, nullable=True),
)
