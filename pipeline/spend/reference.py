"""The reference data the spend stage prices and budgets with: the price
book and the route catalog's token caps, as a snapshot reloaded only when
a revision changes (one cheap query before every batch)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import polars as pl

from models.prices import ENTRY_KEY, RATES, PriceBook, PriceEntry
from pipeline.spend.budgets import CAPS_SCHEMA, NO_CAPS
from pipeline.spend.pricing import book_frame
from pipeline.stream.pg import PgSession

log = logging.getLogger(__name__)

_REVISIONS = (
    "SELECT (SELECT coalesce(max(id), 0) FROM price_book),"
    " (SELECT coalesce(max(loaded_at)::text, '') || '/' || count(*) FROM route_catalog)"
)
_PRICE_FIELDS = (*ENTRY_KEY, *RATES)
_PRICES = f"SELECT {', '.join(_PRICE_FIELDS)}, id FROM price_book ORDER BY id"


class ReferenceReader(PgSession):
    """Reads the reference data on a connection of its own, so a refresh
    never waits behind a sink's transaction while a batch is prepared."""

    async def revisions(self) -> tuple[int, str]:
        """The price book's revision (its highest entry id) and the route
        catalog's (when it was loaded, and its size)."""
        ((prices, catalog),) = await self.query(_REVISIONS)
        return int(prices), str(catalog)  # type: ignore[call-overload]

    async def price_book(self) -> tuple[PriceBook, int]:
        """The whole price book and its revision."""
        rows = await self.query(_PRICES)
        entries = tuple(
            PriceEntry.model_validate(dict(zip(_PRICE_FIELDS, r, strict=False))) for r in rows
        )
        return PriceBook(entries), max((int(r[-1]) for r in rows), default=0)  # type: ignore[call-overload]

    async def budget_caps(self) -> pl.DataFrame:
        """The route catalog's token caps, for :mod:`pipeline.spend.budgets`."""
        rows = await self.query("SELECT route, input_cap, output_cap FROM route_catalog")
        return pl.DataFrame(rows, schema=CAPS_SCHEMA, orient="row")


class ReferenceData:
    """The worker's snapshot of the price book and the token caps, each
    reloaded when its revision changes; a new price book triggers
    ``reprice`` (events stored unpriced may have a price now)."""

    def __init__(self, reader: ReferenceReader, reprice: Callable[[], Awaitable[None]]) -> None:
        self.reader = reader
        self.reprice = reprice
        self.revision = -1
        self.book = PriceBook()
        self.frame = book_frame(self.book)
        self.catalog_revision = ""
        self.caps = NO_CAPS

    async def refresh(self) -> None:
        prices, catalog = await self.reader.revisions()
        if catalog != self.catalog_revision:
            self.caps, self.catalog_revision = await self.reader.budget_caps(), catalog
            log.info("route catalog %s: token caps for %d routes", catalog, self.caps.height)
        if prices == self.revision:
            return
        self.book, self.revision = await self.reader.price_book()
        self.frame = book_frame(self.book)
        log.info("price book revision %s: %d entries", self.revision, len(self.book))
        await self.reprice()
