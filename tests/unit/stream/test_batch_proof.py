"""A batch proved whole in one read must be exactly what the line-by-line
checks and the contract make of it; anything the proof cannot vouch for goes
to those checks. ``ColumnContract.proved`` is the fast path of every topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import BaseModel

from models.contracts import CacheEvent, UsageEvent
from pipeline.cache.codec import CACHE
from pipeline.spend.codec import USAGE
from pipeline.stream.message import Message
from pipeline.stream.ndjson import ColumnContract, judge
from tests.factories import cache_event, event

CACHE_EVENT = cache_event(ts="2025-11-01T10:00:00.25Z")
CONTRACTS: dict[str, tuple[ColumnContract, type[BaseModel], dict[str, Any]]] = {
    "usage": (USAGE, UsageEvent, event()),
    "cache": (CACHE, CacheEvent, CACHE_EVENT),
}


def compact(ev: dict[str, Any]) -> str:
    return json.dumps(ev, separators=(",", ":"))


def batch(lines: list[str], per_message: int = 2) -> list[Message]:
    return [
        Message(k % 3, k, "\n".join(lines[i : i + per_message]).encode())
        for k, i in enumerate(range(0, len(lines), per_message))
    ]


def variants(base: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """n distinct valid events: the fields the keys and sums read vary."""
    out = []
    for i in range(n):
        ev = {**base, "tenant": f"t{i % 3}", "ts": f"2025-11-01T10:0{i % 10}:0{i % 6}Z"}
        if "event_id" in ev:
            ev["event_id"] = f"e-{i}"
        out.append(ev)
    return out


def contract_verdicts(model: type[BaseModel], lines: list[str]) -> list[BaseModel | None]:
    return [judge(model, text.encode())[0] for text in lines]


@pytest.mark.parametrize("name", CONTRACTS)
def test_a_clean_batch_is_proved_whole_and_is_what_the_line_checks_make_of_it(name: str) -> None:
    contract, _, base = CONTRACTS[name]
    lines = [compact(e) for e in variants(base, 9)]
    messages = batch(lines)
    proved = contract.proved(messages)
    assert proved is not None
    checked = contract.checked(messages)
    assert checked.dead == []
    assert_frame_equal(proved, checked.events)
    assert proved["line"].to_list() == [0, 1] * 4 + [0]


@pytest.mark.parametrize("name", CONTRACTS)
@pytest.mark.parametrize(
    "style",
    [
        lambda ev: json.dumps(ev),  # ", " and ": " as Python writes by default
        lambda ev: json.dumps(dict(reversed(list(ev.items())))),  # any key order
        lambda ev: json.dumps(ev, indent=None, separators=(" , ", " : ")),
    ],
)
def test_any_json_layout_of_clean_events_is_proved(
    name: str, style: Callable[[dict[str, Any]], str]
) -> None:
    contract, _, base = CONTRACTS[name]
    messages = batch([style(e) for e in variants(base, 5)])
    proved = contract.proved(messages)
    assert proved is not None
    assert_frame_equal(proved, contract.checked(messages).events)


# Each turns one clean line into one the proof must not vouch for. The
# contract may still accept it (duplicate key: last value wins; unknown key;
# a legitimate id that looks like a number), but only the careful path may say so.
MUTATIONS: dict[str, Callable[[str], str]] = {
    "duplicate key, other value": lambda s: s[:-1] + ',"tenant":"mallory"}',
    "duplicate key, same value": lambda s: s[:-1] + ',"route":"/v1/chat"}',
    "identifier as a number": lambda s: s.replace('"tenant":"t1"', '"tenant":41'),
    "identifier as a list": lambda s: s.replace('"tenant":"t1"', '"tenant":["t1"]'),
    "identifier as an object": lambda s: s.replace('"tenant":"t1"', '"tenant":{"t":"1"}'),
    "explicit null, optional field": lambda s: (
        s[:-1] + ',"fallback_from":null,"owner_tenant":null}'
    ),
    "explicit null, defaulted field": lambda s: s[:-1] + ',"output_tokens":null}',
    "text-bearing key with null": lambda s: s[:-1] + ',"prompt":null}',
    "text-bearing key with text": lambda s: s[:-1] + ',"completion":"hello"}',
    "unknown key": lambda s: s[:-1] + ',"datacenter":"eu-west-1"}',
    "known key nested in an unknown one": lambda s: s[:-1] + ',"meta":{"tenant":"mallory"}}',
    "escaped quote in a value": lambda s: s.replace('"t1"', '"t\\"1"'),
    "escaped key": lambda s: s.replace('"route"', '"ro\\u0075te"'),
    "id that looks like a number": lambda s: s.replace('"t1"', '"41"'),
    "id that looks like a boolean": lambda s: s.replace('"t1"', '"true"'),
    "two objects on one line": lambda s: s + " " + s,
    "blank line after it": lambda s: s + "\n",
    "naive timestamp": lambda s: s.replace("Z", "", 1),
    "blank identifier": lambda s: s.replace('"t1"', '"   "'),
    "tokens as a float": lambda s: s.replace('"tokens":300', '"tokens":300.0').replace(
        '"input_tokens":4000', '"input_tokens":4000.0'
    ),
}


@pytest.mark.parametrize("name", CONTRACTS)
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_what_the_proof_cannot_vouch_for_goes_to_the_careful_path(name: str, mutation: str) -> None:
    contract, model, base = CONTRACTS[name]
    lines = [compact(e) for e in variants(base, 5)]
    mutated = MUTATIONS[mutation](lines[1])
    assert mutated != lines[1], "the mutation must change the line"
    lines[1] = mutated
    messages = batch(lines)
    assert contract.proved(messages) is None
    assert_agrees_with_contract(contract, model, messages)


def assert_agrees_with_contract(
    contract: ColumnContract, model: type[BaseModel], messages: list[Message]
) -> None:
    """decode() keeps exactly the lines the contract accepts, with its values,
    and dead-letters exactly the others."""
    decoded = contract.decode(messages)
    rows = {(r["offset"], r["line"]): r for r in decoded.events.iter_rows(named=True)}
    dead = {(d.offset, d.line) for d in decoded.dead}
    for m in messages:
        texts = [t for t in m.value.decode().split("\n") if t.strip()]
        for i, verdict in enumerate(contract_verdicts(model, texts)):
            pos = (m.offset, i)
            if verdict is None:
                assert pos in dead and pos not in rows, texts[i]
                continue
            assert pos in rows and pos not in dead, texts[i]
            row = rows[pos]
            assert row["ts"] == verdict.ts.astimezone(UTC)  # type: ignore[attr-defined]
            for f in ("tenant", "route", "node_id"):
                assert row[f] == getattr(verdict, f), f


_SAFE_TEXT = st.text(alphabet="abcé-/_.:0123456789 ", min_size=0, max_size=6)
_IDENT = st.text(alphabet="abcé-/_.:0123456789", min_size=1, max_size=6)
_ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**13), _SAFE_TEXT, st.lists(_SAFE_TEXT, max_size=1)
)


@st.composite
def lines_of(draw: st.DrawFn, base: dict[str, Any]) -> list[str]:
    """Valid events with arbitrary identifier text, some with one field
    changed, dropped, duplicated or added, in either JSON layout."""
    out = []
    for ev in variants(base, draw(st.integers(1, 6))):
        ev = {**ev, "tenant": draw(_IDENT), "route": draw(_IDENT)}
        extra = ""
        if draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from([*sorted(ev), "prompt", "region"]))
            action = draw(st.sampled_from(["set", "drop", "duplicate"]))
            value = draw(_ANY_VALUE)
            if action == "set":
                ev[key] = value
            elif action == "drop":
                ev.pop(key, None)
            else:
                extra = f",{json.dumps(key)}:{json.dumps(value)}"
        ascii_only = draw(st.booleans())  # else "é" goes as itself, not as an escape
        text = (
            json.dumps(ev, ensure_ascii=ascii_only)
            if draw(st.booleans())
            else json.dumps(ev, separators=(",", ":"), ensure_ascii=ascii_only)
        )
        out.append(text[:-1] + extra + "}" if extra and text != "{}" else text)
    return out


@pytest.mark.parametrize("name", CONTRACTS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), per_message=st.integers(1, 3))
def test_a_proved_batch_equals_the_careful_path_and_the_contract(
    name: str, data: st.DataObject, per_message: int
) -> None:
    contract, model, base = CONTRACTS[name]
    messages = batch(data.draw(lines_of(base)), per_message)
    proved = contract.proved(messages)
    if proved is not None:
        checked = contract.checked(messages)
        assert checked.dead == []
        assert_frame_equal(proved, checked.events)
    assert_agrees_with_contract(contract, model, messages)


def test_the_proof_reads_a_frame_of_the_contracts_schema() -> None:
    proved = CACHE.proved(batch([compact(CACHE_EVENT)]))
    assert proved is not None
    assert proved.schema == pl.Schema(CACHE.frame_schema)
