"""What a newer price map changes in the book. Pure.

Price maps drift: a sync compares each key's version in force now with the
map's entries for it and proposes a new version, effective from the sync,
only for a key whose prices changed (or that is new). A version already in
the book is never rewritten and nothing is removed, so history is never
re-priced by a sync.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from models.prices import RATES, PriceBook, PriceEntry

Key = tuple[str, str, str, str]  # model, provider, region, service tier


@dataclass(frozen=True)
class Change:
    """One rate of one prompt-size tier that a sync changes (None: absent)."""

    key: Key
    from_input_tokens: int
    rate: str
    old: Decimal | None
    new: Decimal | None


@dataclass
class Sync:
    added: list[PriceEntry] = field(default_factory=list)  # new versions, effective now
    changes: list[Change] = field(default_factory=list)
    new_keys: list[Key] = field(default_factory=list)
    unchanged: int = 0  # keys whose prices in force equal the map's
    gone: list[Key] = field(default_factory=list)  # in the book, not in the map: kept


def _tiers(entries: Iterable[PriceEntry]) -> dict[int, dict[str, Decimal | None]]:
    return {e.from_input_tokens: {r: getattr(e, r) for r in RATES} for e in entries}


def sync(book: PriceBook, incoming: Iterable[PriceEntry], now: datetime) -> Sync:
    """The versions to add so the book prices from ``now`` as ``incoming``
    does (``incoming``'s own effective dates are replaced by ``now``)."""
    by_key: dict[Key, list[PriceEntry]] = defaultdict(list)
    for e in incoming:
        by_key[e.key].append(e)
    result = Sync()
    for key, entries in sorted(by_key.items()):
        version = book.version_at(key, now)
        old = _tiers(book.entries[i] for _, i in version) if version else {}
        new = _tiers(entries)
        if old == new:
            result.unchanged += 1
            continue
        if not old:
            result.new_keys.append(key)
        for start in sorted(set(old) | set(new)) if old else ():
            for rate in RATES:
                before, after = old.get(start, {}).get(rate), new.get(start, {}).get(rate)
                if before != after:
                    result.changes.append(Change(key, start, rate, before, after))
        result.added.extend(e.model_copy(update={"effective_from": now}) for e in entries)
    result.gone = sorted(k for k in book.keys if k not in by_key and book.version_at(k, now))
    return result
