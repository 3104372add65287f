"""How month close allocates shared costs, declared in YAML
(``models/data/chargeback.yaml`` by default). Parsed like the route catalog:
every scalar a string, so no float ever holds money, and errors name the
path of the offending value."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.catalog import _path
from models.money import CENT

Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class PolicyError(ValueError):
    """The policy is invalid; ``problems`` lists each as ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid chargeback policy:\n  " + "\n  ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SharedCostSpec(_Strict):
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


class ChargebackPolicy(_Strict):
    allocation: Literal["proportional", "even", "fixed"] = "proportional"
    fixed_shares: dict[str, Annotated[Decimal, Field(gt=0, le=1)]] = {}
    shared_costs: list[SharedCostSpec] = []

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if self.allocation == "fixed" and sum(self.fixed_shares.values()) != 1:
            raise ValueError("fixed_shares must add up to 1")
        if self.allocation != "fixed" and self.fixed_shares:
            raise ValueError("fixed_shares apply only to allocation: fixed")
        return self


def parse_policy(text: str) -> ChargebackPolicy:
    try:
        data = yaml.load(text, Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        raise PolicyError([f"not YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise PolicyError(["the chargeback policy must be a mapping"])
    try:
        return ChargebackPolicy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(
            [f"{_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
        ) from exc
