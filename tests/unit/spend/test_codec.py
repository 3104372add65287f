"""The column-wise fast path must agree with the pydantic contract, line by line."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.contracts import CacheEvent, UsageEvent
from pipeline.cache.codec import CACHE
from pipeline.spend.codec import decode
from pipeline.stream.message import Message
from pipeline.stream.ndjson import _lines_per_message
from tests.factories import cache_event, event, line, messages


def test_good_lines_decode_column_wise() -> None:
    evs = [event(event_id=f"e{i}", input_tokens=100 + i) for i in range(7)]
    decoded = decode(messages(evs, per_message=3))
    assert decoded.dead == []
    assert decoded.events.height == 7
    assert sorted(decoded.events["input_tokens"].to_list()) == list(range(100, 107))
    assert decoded.events.select("offset", "line").rows()[:3] == [(0, 0), (0, 1), (0, 2)]


def test_each_kind_of_bad_line_is_dead_lettered_with_its_reason() -> None:
    bad = {
        b"not json at all": "not_json",
        b"[1, 2, 3]": "not_object",
        b'"just a string"': "not_object",
        line(event(input_tokens=-5)): "schema: input_tokens",
        line(event(tenant=7)): "schema: tenant",
        line(event(output_tokens=2.5)): "schema: output_tokens",
        line(event(ts="2025-11-01T10:00:00")): "schema: ts",
        line(event(cache_read_tokens=4000, cache_write_tokens=1)): "schema: <event>",
        b"\xff\xfe{}": "not_json",
        line(event(completion="secret text")): "text_field",
    }
    good = line(event(event_id="good"))
    value = b"\n".join([good, *bad]) + b"\n\n"
    decoded = decode([Message(3, 42, value)])
    assert decoded.events["event_id"].to_list() == ["good"]
    assert len(decoded.dead) == len(bad)
    for d, (raw, reason) in zip(
        sorted(decoded.dead, key=lambda d: d.line), bad.items(), strict=True
    ):
        assert (d.partition, d.offset) == (3, 42)
        assert d.reason.startswith(reason), (d.reason, reason)
        if reason == "text_field":
            assert b"secret text" not in d.raw and b"<redacted>" in d.raw
        else:
            assert d.raw == raw


def test_a_bad_message_does_not_spoil_its_neighbours() -> None:
    good = [Message(0, i, line(event(event_id=f"g{i}"))) for i in range(3)]
    poisoned = Message(0, 9, line(event(event_id="ok-in-bad")) + b"\n" + line(event(attempt="x")))
    decoded = decode([*good, poisoned])
    assert sorted(decoded.events["event_id"].to_list()) == ["g0", "g1", "g2", "ok-in-bad"]
    assert [(d.offset, d.line) for d in decoded.dead] == [(9, 1)]


# --- property: fast path and contract agree ------------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.just(""),
    st.just("  "),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_timestamps = st.sampled_from(
    [
        "2025-11-01T10:00:00Z",
        "2025-11-01T10:00:00.5+02:00",
        "2025-11-01T10:00:00",
        "2025-11-01 10:00:00Z",
        "2025-11-01T10:00:00.1234567Z",
        "2025-11-01t10:00:00z",
        "2025-11-01T10:00:00+0200",
        "2025-13-01T10:00:00Z",
        "2025-11-01T24:00:00Z",
        "bad",
    ]
)


@st.composite
def maybe_bad_events(draw: st.DrawFn) -> dict[str, Any]:
    ev = event(
        event_id=draw(st.text(min_size=1, max_size=6)),
        ts=draw(_timestamps),
        input_tokens=draw(st.integers(0, 5000)),
        cache_read_tokens=draw(st.integers(0, 3000)),
        cache_write_tokens=draw(st.integers(0, 3000)),
    )
    for key in draw(st.lists(st.sampled_from(sorted(ev)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del ev[key]
        else:
            ev[key] = draw(_values)
    return ev


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(maybe_bad_events(), min_size=1, max_size=8), st.integers(1, 4))
def test_fast_path_accepts_exactly_what_the_contract_accepts(
    evs: list[dict[str, Any]], per_message: int
) -> None:
    decoded = decode(messages(evs, per_message=per_message))
    accepted = {(r["offset"], r["line"]): r for r in decoded.events.iter_rows(named=True)}
    dead = {(d.offset, d.line) for d in decoded.dead}
    for i, ev in enumerate(evs):
        pos = (i // per_message, i % per_message)
        try:
            expected = UsageEvent.model_validate_json(json.dumps(ev))
        except ValidationError:
            assert pos in dead and pos not in accepted, ev
            continue
        assert pos in accepted, ev
        row = accepted[pos]
        assert row["ts"] == expected.ts.astimezone(UTC)
        for field in (
            "event_id",
            "tenant",
            "input_tokens",
            "cache_read_tokens",
            "attempt",
            "batch",
        ):
            assert row[field] == getattr(expected, field), field
        assert row["status"] == expected.status.value


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_arbitrary_bytes_never_crash_and_are_all_accounted_for(chunks: list[bytes]) -> None:
    decoded = decode([Message(0, i, c) for i, c in enumerate(chunks)])
    lines = sum(len([x for x in c.split(b"\n") if x.strip(b" \t\r\n")]) for c in chunks)
    assert decoded.events.height + len(decoded.dead) == lines


# --- the cache-event contract takes the same fast path ---------------------------


@st.composite
def maybe_bad_cache_events(draw: st.DrawFn) -> dict[str, Any]:
    ev = cache_event()
    ev["ts"] = draw(_timestamps)
    ev["op"] = draw(st.sampled_from(["hit", "miss", "insert", "evict", "peek"]))
    ev["layer"] = draw(st.sampled_from(["prefix", "embedding", "response", "semantic", "disk"]))
    for key in draw(st.lists(st.sampled_from(sorted(ev)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del ev[key]
        else:
            ev[key] = draw(_values)
    return ev


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(maybe_bad_cache_events(), min_size=1, max_size=8), st.integers(1, 4))
def test_cache_fast_path_accepts_exactly_what_the_contract_accepts(
    evs: list[dict[str, Any]], per_message: int
) -> None:
    lines = [json.dumps(e).encode() for e in evs]
    msgs = [
        Message(0, k, b"\n".join(lines[i : i + per_message]))
        for k, i in enumerate(range(0, len(lines), per_message))
    ]
    decoded = CACHE.decode(msgs)
    accepted = {(r["offset"], r["line"]): r for r in decoded.events.iter_rows(named=True)}
    dead = {(d.offset, d.line) for d in decoded.dead}
    for i, ev in enumerate(evs):
        pos = (i // per_message, i % per_message)
        try:
            expected = CacheEvent.model_validate_json(json.dumps(ev))
        except ValidationError:
            assert pos in dead and pos not in accepted, ev
            continue
        assert pos in accepted, ev
        row = accepted[pos]
        assert row.pop("ts") == expected.ts.astimezone(UTC)
        for field, value in row.items():
            if field not in ("partition", "offset", "line"):
                assert value == getattr(expected, field), field


def test_an_explicit_null_where_the_contract_has_a_default_is_judged_by_the_contract() -> None:
    """The reader cannot tell ``"output_tokens": null`` from an absent key;
    the contract defaults an absent one to 0 but rejects the null (found by
    the property above)."""
    absent, null = cache_event(), {**cache_event(), "output_tokens": None}
    del absent["output_tokens"]
    decoded = CACHE.decode(
        [Message(0, 0, json.dumps(absent).encode() + b"\n" + json.dumps(null).encode())]
    )
    assert decoded.events["output_tokens"].to_list() == [0]
    assert [(d.line, d.reason.split(":")[1].strip()) for d in decoded.dead] == [
        (1, "output_tokens")
    ]


def test_a_duplicate_key_whose_last_value_is_null_is_refused() -> None:
    """polars keeps the first value (500), pydantic the last (null): the
    line is ambiguous and refused. The line checks once counted only
    non-null keys and let it through (found by test_batch_proof.py)."""
    text = json.dumps(event())[:-1] + ', "output_tokens": null}'
    decoded = decode([Message(0, 0, text.encode())])
    assert decoded.events.is_empty()
    assert [d.reason for d in decoded.dead] == ["duplicate_key: output_tokens given twice"]


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"\n")), min_size=1))
def test_lines_per_message_counts_each_messages_own_newlines(values: list[bytes]) -> None:
    joined = np.frombuffer(b"\n".join(values), np.uint8)
    assert _lines_per_message(joined, [len(v) for v in values]) == [
        v.count(b"\n") + 1 for v in values
    ]
