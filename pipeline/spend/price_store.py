"""The price book in PostgreSQL: load versions, read the book, reprice.

Loading never rewrites history: an entry is keyed by (model, provider,
effective_from); loading the same entry again changes nothing, and loading a
different price for an existing key is refused (publish a new version with
a later effective_from instead).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources

from sqlalchemy import Engine, and_, delete, select, update

from models.money import exact
from models.prices import ENTRY_KEY, RATES, PriceBook, PriceEntry, parse_csv
from models.spend_tables import KIND_COSTS, spend_window
from models.tables import price_book, unpriced_event
from pipeline.spend.windows import COSTED, COSTED_COLUMNS, KEY, SUBSETS, counts
from pipeline.storage.revisions import LoadResult, Version, load_versions


def default_prices() -> list[PriceEntry]:
    """The bundled late-2025 list prices in ``models/data/default_prices.csv``."""
    return parse_csv(resources.files("models").joinpath("data/default_prices.csv").read_text())


def load_entries(engine: Engine, entries: Iterable[PriceEntry], source: str) -> LoadResult:
    return load_versions(
        engine,
        (
            Version(
                price_book,
                ENTRY_KEY,
                RATES,
                {**e.model_dump(exclude={"currency"}), "currency": e.currency, "source": source},
                f"{describe(e)}: already loaded with different prices",
            )
            for e in entries
        ),
    )


def describe(e: PriceEntry) -> str:
    """One entry's key, as a person reads it."""
    where = "".join(
        [
            f" in {e.region}" if e.region else "",
            f" ({e.service_tier})" if e.service_tier != "standard" else "",
            f" from {e.from_input_tokens:,} prompt tokens" if e.from_input_tokens else "",
        ]
    )
    return f"{e.model}/{e.provider}{where} from {e.effective_from.isoformat()}"


def load_book(engine: Engine) -> PriceBook:
    with engine.connect() as conn:
        rows = conn.execute(select(price_book).order_by(price_book.c.id)).mappings().all()
    return PriceBook(
        tuple(PriceEntry.model_validate({c: r[c] for c in (*ENTRY_KEY, *RATES)}) for r in rows)
    )


@dataclass
class Repriced:
    events: int = 0
    cost_usd: Decimal = Decimal(0)
    still_unpriced: int = 0


def reprice(engine: Engine) -> Repriced:
    """Price stored unpriced events whose model now has a price in force at
    their ts, and move that cost into their windows, in one transaction.
    Rows are locked (SKIP LOCKED), so concurrent repricers never double-apply."""
    book = load_book(engine)
    result = Repriced()
    deltas: dict[tuple[object, ...], dict[str, Decimal | int]] = defaultdict(
        lambda: {
            **{column: Decimal(0) for column in (*COSTED_COLUMNS, *KIND_COSTS)},
            "unpriced_attempts": 0,
        }
    )
    done = []
    with engine.begin() as conn:
        rows = (
            conn.execute(select(unpriced_event).with_for_update(skip_locked=True)).mappings().all()
        )
        for r in rows:
            rate = book.rate(
                r["model"],
                r["provider"],
                r["ts"],
                region=r["region"] or None,
                tier=r["service_tier"],
                input_tokens=r["input_tokens"],
            )
            if rate is None:
                result.still_unpriced += 1
                continue
            tokens = counts(dict(r))
            costs = book.entries[rate.price_id].costs(tokens, discounted=rate.discounted)
            listed = book.entries[rate.list_price_id].costs(tokens, discounted=False).total
            d = deltas[tuple(r[k] for k in KEY)]
            with exact():
                # The same subsets of attempts as the stream's windows.
                for column, prefix, at_list in COSTED:
                    if SUBSETS[prefix].test(r["attempt"], r["failed"], r["invalid"]):
                        d[column] += listed if at_list else costs.total
                for column, part in zip(KIND_COSTS, costs.parts(), strict=True):
                    d[column] += part
                d["unpriced_attempts"] -= 1
                result.cost_usd += costs.total
            done.append(r["event_key"])
        c = spend_window.c
        for (ws, tenant, route, feature, provider, model), d in deltas.items():
            conn.execute(
                update(spend_window)
                .where(
                    and_(
                        c.window_start == ws,
                        c.tenant == tenant,
                        c.route == route,
                        c.feature == feature,
                        c.provider == provider,
                        c.model == model,
                    )
                )
                .values(**{k: c[k] + v for k, v in d.items()})
            )
        if done:
            conn.execute(delete(unpriced_event).where(unpriced_event.c.event_key.in_(done)))
    result.events = len(done)
    return result
