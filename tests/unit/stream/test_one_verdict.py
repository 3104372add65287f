"""One verdict per line: the fast path's verdict on a line is a function of
that line's bytes alone, and equal to the contract's, whatever the spelling.

The lines here are JSON *text*: keys with escapes, keys given twice, unicode
and forbidden characters, integers spelled ``1e2``, ``-0``, ``1.0`` or far
beyond int64, timestamps with offsets, leap seconds, epoch numbers or a
lower-case ``z``. Each is judged alone, inside a batch of others, and by the
contract (:func:`pipeline.stream.ndjson.judge`); all three must agree, and an
accepted line must decode to the contract's values.
"""

from __future__ import annotations

import json
from datetime import UTC
from enum import Enum
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.contracts import CacheEvent, UsageEvent
from pipeline.cache.codec import CACHE
from pipeline.spend.codec import USAGE
from pipeline.stream.message import Message
from pipeline.stream.ndjson import ColumnContract, judge
from tests.factories import cache_event, event

_TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "2025-11-01T10:00:30Z",
            "2025-11-01T10:00:30.5Z",
            "2025-11-01T10:00:30.123456+02:00",
            "2025-11-01T10:00:30.1234567Z",  # nanoseconds: refused
            "2025-11-01T23:59:60Z",  # leap second: refused
            "2025-11-01T10:00:30z",
            "2025-11-01 10:00:30Z",
            "2025-11-01T10:00:30",  # no zone
            "2025-11-01T10:00:30-23:59",
            "2025-11-01T10:00:30+24:00",
            "2025-02-30T10:00:30Z",
            "2025-11-01T24:00:00Z",
            "2025-11-01",
        ]
    ),
    st.integers(-(2**40), 2**40),  # epoch seconds: refused
)
_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from("\u202e\x00\t\u2066"),
    max_size=6,
)
_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 255, 256, 10**12, 10**12 + 1, 2**63 - 1, 2**63, 86_400_000]),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_VALUES = st.one_of(
    _SCALARS, st.lists(_SCALARS, max_size=2), st.dictionaries(_TEXT, _SCALARS, max_size=2)
)


@st.composite
def _spelled(draw: st.DrawFn, value: Any) -> str:
    """``value`` as JSON text, in one of the spellings JSON allows for it."""
    if isinstance(value, bool) or value is None or not isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, int):
        form = draw(st.sampled_from(["plain", "fraction", "exponent"]))
        if form == "fraction":
            return f"{value}.0"
        if form == "exponent":
            return f"{value}e0"
        return str(value)
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only)
    if draw(st.booleans()) and "/" in text:
        text = text.replace("/", "\\/")
    return text


@st.composite
def _key(draw: st.DrawFn, name: str) -> str:
    if name and draw(st.integers(0, 5)) == 0:
        i = draw(st.integers(0, len(name) - 1))
        return '"' + name[:i] + f"\\u{ord(name[i]):04x}" + name[i + 1 :] + '"'
    return json.dumps(name)


@st.composite
def _line(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    fields = dict(base)
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True)):
        fields[name] = draw(_TIMESTAMPS if name == "ts" else _VALUES)
    if draw(st.integers(0, 6)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    if draw(st.integers(0, 8)) == 0:
        fields[draw(st.sampled_from(["extra", "prompt", "content"]))] = draw(_SCALARS)
    pairs = [(draw(_key(k)), draw(_spelled(v))) for k, v in fields.items()]
    if draw(st.integers(0, 6)) == 0:  # a key given twice
        k, _ = draw(st.sampled_from(pairs))
        pairs.append((k, draw(_spelled(draw(_SCALARS)))))
    pairs = draw(st.permutations(pairs))
    sep = draw(st.sampled_from([",", ", ", " ,"]))
    return ("{" + sep.join(f"{k}:{v}" for k, v in pairs) + "}").encode()


_POSITION = ("partition", "offset", "line")
Model = type[UsageEvent | CacheEvent]


def _verdict(contract: ColumnContract, lines: list[bytes]) -> list[dict[str, Any] | str]:
    """Per line: its decoded row, or its dead letter's reason category."""
    messages = [Message(0, i, line) for i, line in enumerate(lines)]
    decoded = contract.decode(messages)
    out: dict[int, dict[str, Any] | str] = {d.offset: d.reason.split(":")[0] for d in decoded.dead}
    for row in decoded.events.iter_rows(named=True):
        out[row["offset"]] = {
            k: v for k, v in row.items() if k not in ("partition", "offset", "line")
        }
    return [out[i] for i in range(len(lines))]


def _contract(
    model: type[UsageEvent | CacheEvent], contract: ColumnContract, line: bytes
) -> dict[str, Any] | str:
    value, reason = judge(model, line)
    if value is None:
        return reason.split(":")[0]
    row = {
        k: v.value if isinstance(v, Enum) else v
        for k, v in value.model_dump(mode="python").items()
        if k in contract.schema
    }
    row["ts"] = row["ts"].astimezone(UTC)
    return row


def _agree(
    model: type[UsageEvent | CacheEvent], contract: ColumnContract, lines: list[bytes]
) -> None:
    together = _verdict(contract, lines)
    for line, in_batch in zip(lines, together, strict=True):
        (alone,) = _verdict(contract, [line])
        expected = _contract(model, contract, line)
        assert alone == expected, line
        assert in_batch == expected, line


_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.lists(_line(event()), min_size=1, max_size=6))
def test_usage_fast_path_and_contract_agree_line_by_line(lines: list[bytes]) -> None:
    _agree(UsageEvent, USAGE, lines)


@_SETTINGS
@given(st.lists(_line(cache_event()), min_size=1, max_size=6))
def test_cache_fast_path_and_contract_agree_line_by_line(lines: list[bytes]) -> None:
    _agree(CacheEvent, CACHE, lines)


def test_the_rules_written_down() -> None:
    """Each rule of the contract's docstring, one line each."""
    base = json.dumps(event())
    cases = {
        base.replace('"tenant": "acme"', '"tenant": "acme", "tenant": "globex"'): "duplicate_key",
        base.replace(
            '"tenant": "acme"', '"t\\u0065nant": "globex", "tenant": "acme"'
        ): "duplicate_key",
        base.replace('"2025-11-01T10:00:30Z"', '"2025-11-01T10:00:60Z"'): "schema",
        base.replace('"2025-11-01T10:00:30Z"', "1761991230"): "schema",
        base.replace('"2025-11-01T10:00:30Z"', '"0000-01-01T00:00:00Z"'): "schema",
        base.replace('"tenant": "acme"', '"tenant": "ac\\u200bme"'): "bad_identifier",
        base.replace('"tenant": "acme"', '"tenant": "ac\\u202eme"'): "bad_identifier",
        base.replace('"tenant": "acme"', '"tenant": "ac\\u0000me"'): "bad_identifier",
        base.replace('"attempt": 1', '"attempt": 1.0'): "schema",
        base.replace("}", ', "latency_ms": 9223372036854775808}'): "schema",
        base.replace("}", ', "pr\\u006fmpt": "hi"}'): "text_field",
    }
    for line, reason in cases.items():
        assert _verdict(USAGE, [line.encode()]) == [reason], line
    # An escaped spelling of a valid event is the same event.
    escaped = base.replace('"tenant": "acme"', '"t\\u0065nant": "\\u0061cme"').encode()
    assert _verdict(USAGE, [escaped]) == _verdict(USAGE, [base.encode()])
