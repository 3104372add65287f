"""The one SQLAlchemy ``metadata`` every table is declared on, and the column
types they share."""

from __future__ import annotations

from typing import Final

from sqlalchemy import BigInteger, Column, DateTime, MetaData, Numeric

from models.money import COST_SCALE, PRICE_DECIMALS

metadata = MetaData()

MONEY: Final = Numeric(38, COST_SCALE)
PRICE: Final = Numeric(20, PRICE_DECIMALS)
TS: Final = DateTime(timezone=True)


def count_column(name: str) -> Column[int]:
    return Column(name, BigInteger, nullable=False, server_default="0")


def money_column(name: str) -> Column[object]:
    return Column(name, MONEY, nullable=False, server_default="0")
