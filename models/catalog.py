"""The route catalog and the anomaly rules' settings, declared in YAML.

Every route declares a token budget, a latency budget, its retry limit and
its fallback model; every rule has thresholds, a severity and can be turned
off. Parsed by models.yaml_config: every scalar a string, so no float ever
sneaks into a money threshold, and errors name the path of the offending
value (``routes[2].token_budget.input_cap``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from models.yaml_config import ConfigError, Strict, parse

Severity = Literal["info", "ticket", "page"]
Positive = Annotated[int, Field(gt=0)]
PositiveDecimal = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Minutes = Annotated[int, Field(gt=0, le=60 * 24 * 31)]


class TokenBudget(Strict):
    input_cap: Positive
    output_cap: Positive
    hard_cap_action: Literal["reject", "truncate", "alert"] = "alert"


class LatencyBudget(Strict):
    p50_ms: Positive
    p95_ms: Positive
    p99_ms: Positive
    ttft_ms: Positive | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.p50_ms <= self.p95_ms <= self.p99_ms:
            raise ValueError("latency budget must have p50_ms <= p95_ms <= p99_ms")
        return self


class Route(Strict):
    route: Annotated[str, Field(min_length=1, pattern=r"\S")]
    token_budget: TokenBudget
    latency_budget: LatencyBudget
    max_retries: Annotated[int, Field(ge=0, le=20)]
    fallback_model: str | None = None


class _Rule(Strict):
    """``window_minutes`` is the span of closed windows a rule reads: long
    enough that a healthy route's noise stays under the threshold, short
    enough to fire within two windows of an incident's start."""

    enabled: bool = True
    severity: Severity = "ticket"
    window_minutes: Minutes = 5


class TenantSpendSpike(_Rule):
    """A tenant's spend in the rolling window above k x the median tenant's.
    ``floor_usd`` keeps a near-zero median from paging on pocket change."""

    k: PositiveDecimal = Decimal(10)
    window_minutes: Minutes = 60
    floor_usd: Usd = Decimal(1)
    severity: Severity = "page"


class FeatureCostPerCall(_Rule):
    """Cost per call over the last ``window_minutes`` against the
    ``baseline_minutes`` centred on the same time a week earlier: a steadier
    baseline than the same two minutes, whose noise alone doubled a
    feature's cost per call a few times a day."""

    window_minutes: Minutes = 2
    baseline_minutes: Minutes = 60
    factor: PositiveDecimal = Decimal(2)
    min_calls: Positive = 50


class TokenBudgetBreach(_Rule):
    """Attempts over a route's caps in one window; a lone long answer is not
    a breach pattern, three are."""

    window_minutes: Minutes = 1
    min_breaches: Positive = 3


class CacheHitRegression(_Rule):
    """Hit rate below (1 - max_drop) x its trailing baseline."""

    window_minutes: Minutes = 1
    max_drop: PositiveDecimal = Decimal("0.5")
    baseline_minutes: Minutes = 24 * 60
    min_lookups: Positive = 100
    severity: Severity = "page"


class RetryAmplification(_Rule):
    min_requests: Positive = 50
    max_attempts_per_request: PositiveDecimal = Decimal("1.5")
    max_retry_cost_share: PositiveDecimal = Decimal("0.25")
    severity: Severity = "page"


class StructuredReprompt(_Rule):
    """Invalid-output attempts per request (about 0.1 on a healthy
    structured route)."""

    max_rate: PositiveDecimal = Decimal("0.25")
    min_requests: Positive = 20


class FallbackRate(_Rule):
    max_rate: PositiveDecimal = Decimal("0.10")
    min_requests: Positive = 20


class TailLatency(_Rule):
    window_minutes: Minutes = 15
    min_calls: Positive = 100


class RunawayRequest(_Rule):
    """A request still active in the window whose retries so far cost more
    than ``max_usd``."""

    window_minutes: Minutes = 1
    max_usd: Usd = Decimal(50)
    severity: Severity = "page"


class UnpricedModel(_Rule):
    window_minutes: Minutes = 1


class TokenizerDrift(_Rule):
    max_drift: PositiveDecimal = Decimal("0.05")
    min_calls: Positive = 20


class EnergyRegression(_Rule):
    max_increase: PositiveDecimal = Decimal("0.30")
    baseline_minutes: Minutes = 24 * 60
    min_tokens: Positive = 10_000


class Rules(Strict):
    tenant_spend_spike: TenantSpendSpike = TenantSpendSpike()
    feature_cost_per_call: FeatureCostPerCall = FeatureCostPerCall()
    token_budget_breach: TokenBudgetBreach = TokenBudgetBreach()
    cache_hit_regression: CacheHitRegression = CacheHitRegression()
    retry_amplification: RetryAmplification = RetryAmplification()
    structured_reprompt: StructuredReprompt = StructuredReprompt()
    fallback_rate: FallbackRate = FallbackRate()
    tail_latency: TailLatency = TailLatency()
    runaway_request: RunawayRequest = RunawayRequest()
    unpriced_model: UnpricedModel = UnpricedModel(severity="page")
    tokenizer_drift: TokenizerDrift = TokenizerDrift()
    energy_regression: EnergyRegression = EnergyRegression()


class Catalog(Strict):
    routes: tuple[Route, ...]
    rules: Rules = Rules()

    @model_validator(mode="after")
    def _unique_routes(self) -> Self:
        seen: set[str] = set()
        for r in self.routes:
            if r.route in seen:
                raise ValueError(f"route {r.route!r} is declared twice")
            seen.add(r.route)
        return self

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.route == name), None)


class CatalogError(ConfigError):
    what = "route catalog"
    root = "<catalog>"


def parse_yaml(text: str) -> Catalog:
    return parse(
        text, Catalog, CatalogError, "the catalog must be a mapping with a 'routes' list",
        empty_ok=False,
    )  # fmt: skip
