"""How month close allocates shared costs, declared in YAML
(``models/data/chargeback.yaml`` by default: no shared costs), parsed by models.yaml_config
like the route catalog."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from models.money import CENT
from models.yaml_config import ConfigError, Strict, parse

Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class PolicyError(ConfigError):
    what = "chargeback policy"
    root = "<policy>"


class SharedCostSpec(Strict):
    """A fixed monthly amount (``usd``), or the month's idle GPU energy
    priced per kWh (``usd_per_kwh``)."""

    name: Annotated[str, Field(min_length=1)]
    usd: Usd | None = None
    usd_per_kwh: Usd | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.usd is None) == (self.usd_per_kwh is None):
            raise ValueError("give exactly one of usd or usd_per_kwh")
        if self.usd is not None and self.usd != self.usd.quantize(CENT):
            raise ValueError("usd must be whole cents")
        return self


class ChargebackPolicy(Strict):
    allocation: Literal["proportional", "even", "fixed"] = "proportional"
    fixed_shares: dict[str, Annotated[Decimal, Field(gt=0, le=1)]] = Field(default_factory=dict)
    shared_costs: list[SharedCostSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if self.allocation == "fixed" and sum(self.fixed_shares.values()) != 1:
            raise ValueError("fixed_shares must add up to 1")
        if self.allocation != "fixed" and self.fixed_shares:
            raise ValueError("fixed_shares apply only to allocation: fixed")
        return self


def parse_policy(text: str) -> ChargebackPolicy:
    return parse(
        text,
        ChargebackPolicy,
        PolicyError,
        "the chargeback policy must be a mapping",
        empty_ok=True,
    )
