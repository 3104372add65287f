"""The ledger: what the windows must hold, recomputed from the input log.

Pure. Given every message of the usage topic (the retained input) and the
price book, ``expected`` runs the batch logic once over the whole log, in
log order per partition, so deduplication and conflicts are decided as the
stream decides them, but with no crash, retry, rebalance or partial batch in
between. ``compare`` names every window where the stored table differs.
That is both the fault suite's reference and ``finops reconcile --ledger``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal

from models.prices import PriceBook
from pipeline.spend.batch import prepare
from pipeline.spend.pricing import book_frame
from pipeline.spend.windows import COUNTERS, SpendWindow
from pipeline.stream.admission import Admission
from pipeline.stream.message import Message, split_lines

WindowKey = tuple[object, ...]


@dataclass(frozen=True)
class Ledger:
    produced: int  # non-blank lines in the log
    counted: int  # events that must be in the windows
    duplicates: int
    dead: Counter[str]  # dead-lettered lines by reason category
    windows: dict[WindowKey, SpendWindow]
    event_keys: frozenset[str]  # what seen_event must hold
    dead_positions: frozenset[tuple[int, int, int]]  # (partition, offset, line)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead.values())


@dataclass(frozen=True)
class WindowDiff:
    key: WindowKey
    column: str
    expected: int | Decimal
    stored: int | Decimal


def expected(messages: Sequence[Message], book: PriceBook, admission: Admission) -> Ledger:
    ordered = sorted(messages, key=lambda m: (m.partition, m.offset))
    batch = prepare(ordered, book, book_frame(book), admission)
    produced = sum(
        1 if admission.size_verdict(len(m.value)) else len(split_lines(m.value)) for m in ordered
    )
    return Ledger(
        produced=produced,
        counted=batch.events.height,
        duplicates=sum(batch.duplicates.values()),
        dead=Counter(category(d.reason) for d in batch.dead),
        windows={w.key(): w for w in batch.windows},
        event_keys=frozenset(batch.events["event_key"].to_list()),
        dead_positions=frozenset((d.partition, d.offset, d.line) for d in batch.dead),
    )


def category(reason: str) -> str:
    return reason.split(":", 1)[0]


def compare(
    want: Mapping[WindowKey, SpendWindow], have: Mapping[WindowKey, SpendWindow]
) -> list[WindowDiff]:
    """Every (window, column) where the stored windows differ from the ledger."""
    zero = {c: 0 for c in COUNTERS}
    diffs = []
    for key in sorted(set(want) | set(have), key=str):
        w, h = want.get(key), have.get(key)
        for column in COUNTERS:
            a = getattr(w, column) if w else zero[column]
            b = getattr(h, column) if h else zero[column]
            if a != b:
                diffs.append(WindowDiff(key, column, a, b))
    return diffs


def window_from_row(row: Mapping[str, object]) -> SpendWindow:
    names = {f.name for f in fields(SpendWindow)}
    return SpendWindow(**{k: v for k, v in row.items() if k in names})  # type: ignore[arg-type]
