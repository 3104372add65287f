"""No input can make a stage raise: arbitrary JSON values in every field of
every contract go through the real agents' prepare step (the spend batch,
the telemetry and cache sinks' ``prepare``), which must return, with every
line accounted for exactly once."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.prices import PriceBook
from pipeline.cache.sink import CacheSink
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.spend.batch import prepare
from pipeline.spend.codec import USAGE
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.stream.message import Message, split_lines
from tests.factories import ADMISSION, cache_event, event

BOOK = PriceBook(tuple(default_prices()))
FRAME = book_frame(BOOK)
SAMPLE = {"node_id": "n1", "gpu": "0", "ts": "2025-11-01T10:00:00Z", "power_w": 300.5}

_ANY: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),
        st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 10**12 + 1]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=300),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _lines(draw: st.DrawFn, base: dict[str, Any]) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        ev = dict(base)
        for name in draw(st.lists(st.sampled_from(sorted(ev)), max_size=4, unique=True)):
            ev[name] = draw(_ANY)
        lines.append(json.dumps(ev, allow_nan=True).encode())
    return lines


def _messages(lines: list[bytes], per_message: int) -> list[Message]:
    return [
        Message(0, i, b"\n".join(lines[k : k + per_message]))
        for i, k in enumerate(range(0, len(lines), per_message))
    ]


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_lines(event()), st.integers(1, 3))
def test_the_spend_prepare_takes_any_value_in_any_field(lines: list[bytes], per: int) -> None:
    messages = _messages(lines, per)
    batch = prepare(messages, BOOK, FRAME, ADMISSION)
    produced = sum(len(split_lines(m.value)) for m in messages)
    assert batch.events.height + len(batch.dead) + sum(batch.duplicates.values()) == produced


@_SETTINGS
@given(_lines(SAMPLE), st.integers(1, 3))
def test_the_telemetry_prepare_takes_any_value_in_any_field(lines: list[bytes], per: int) -> None:
    decoded, dead = TelemetrySink("postgresql://unused", "t").prepare(_messages(lines, per))
    assert len(decoded) + len(dead) == len(lines)


@_SETTINGS
@given(_lines(cache_event()), st.integers(1, 3))
def test_the_cache_prepare_takes_any_value_in_any_field(lines: list[bytes], per: int) -> None:
    batch = CacheSink("postgresql://unused", "c").prepare(_messages(lines, per))
    assert batch.events.height + len(batch.dead) == len(lines)
    assert sum(batch.accepted.values()) == batch.events.height


def test_a_fast_path_that_raises_leaves_every_line_to_the_contract() -> None:
    """Whatever makes the column-wise path raise (here a check that cannot
    cast 4,000 tokens to a byte), the batch is judged line by line by the
    contract: the valid line applies, the invalid one is dead-lettered."""
    failing = replace(USAGE, checks=lambda: [pl.col("input_tokens").cast(pl.UInt8) >= 0])
    good, bad = json.dumps(event()).encode(), b'{"tenant": 1}'
    decoded = failing.decode([Message(0, 0, good + b"\n" + bad)])
    assert decoded.events["event_id"].to_list() == ["e-1"]
    assert [(d.line, d.reason.split(":")[0]) for d in decoded.dead] == [(1, "schema")]
