"""Pure guarantees of one batch: time bounds, size bounds, duplicate keys,
conflicts, redaction, and that every line ends in exactly one place."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.prices import PriceBook
from pipeline.spend.batch import prepare
from pipeline.spend.codec import decode
from pipeline.spend.ledger import expected
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.windows import combine
from pipeline.stream.admission import Admission
from pipeline.stream.message import Message, split_lines
from pipeline.stream.redaction import redact
from tests.factories import ADMISSION, event, line, messages

BOOK = PriceBook(tuple(default_prices()))
FRAME = book_frame(BOOK)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _at(delta: timedelta, **kw: Any) -> dict[str, Any]:
    return event(ts=(NOW + delta).isoformat().replace("+00:00", "Z"), **kw)


def test_event_time_is_bounded_35_days_back_and_5_minutes_ahead() -> None:
    evs = [
        _at(-timedelta(days=35), event_id="oldest-ok"),
        _at(-timedelta(days=35, seconds=1), event_id="too-old"),
        _at(timedelta(minutes=5), event_id="newest-ok"),
        _at(timedelta(minutes=5, seconds=1), event_id="future"),
    ]
    batch = prepare(messages(evs, per_message=2), BOOK, FRAME, Admission(now=NOW))
    assert sorted(batch.events["event_id"]) == ["newest-ok", "oldest-ok"]
    reasons = {json.loads(d.raw)["event_id"]: d.reason for d in batch.dead}
    assert reasons["too-old"].startswith("ts_too_old")
    assert reasons["future"].startswith("ts_in_future")
    # The raw line is kept as sent, so it can be replayed after review.
    assert {d.raw for d in batch.dead} == {line(evs[1]), line(evs[3])}


def test_bounds_are_configurable() -> None:
    old = _at(-timedelta(days=90), event_id="old")
    wide = Admission(now=NOW, max_age=timedelta(days=100))
    assert prepare(messages([old]), BOOK, FRAME, wide).events.height == 1
    assert prepare(messages([old]), BOOK, FRAME, Admission(now=NOW)).events.height == 0


def test_an_oversized_message_is_one_dead_letter_without_its_bytes() -> None:
    big = Message(0, 0, line(event(feature="x" * 200)) + b" " * 2000)
    small = Message(0, 1, line(event(event_id="fine")))
    batch = prepare([big, small], BOOK, FRAME, Admission(now=ADMISSION.now, max_message_bytes=1024))
    assert batch.events["event_id"].to_list() == ["fine"]
    (dead,) = batch.dead
    assert dead.reason.startswith("too_large") and (dead.offset, dead.line) == (0, 0)


def test_same_key_same_payload_is_a_duplicate_even_when_written_differently() -> None:
    first = event(event_id="x", ts="2025-11-01T10:00:30Z")
    again = json.dumps(dict(reversed(list({**first, "ts": "2025-11-01T11:00:30+01:00"}.items()))))
    batch = prepare(
        [Message(0, 0, line(first)), Message(0, 1, again.encode())], BOOK, FRAME, ADMISSION
    )
    assert batch.events.height == 1 and batch.dead == [] and batch.duplicates[0] == 1


def test_same_key_other_payload_is_a_conflict_never_merged() -> None:
    first = event(event_id="x", input_tokens=100)
    forged = event(event_id="x", input_tokens=100_000)
    batch = prepare(messages([first, forged], per_message=1), BOOK, FRAME, ADMISSION)
    assert batch.events["input_tokens"].to_list() == [100]
    (dead,) = batch.dead
    assert dead.reason.startswith("conflict") and dead.raw == line(forged)
    assert sum(batch.duplicates.values()) == 0


def test_the_key_is_scoped_by_tenant_and_node() -> None:
    evs = [
        event(event_id="x"),
        event(event_id="x", tenant="other"),
        event(event_id="x", node_id="n2"),
    ]
    batch = prepare(messages(evs), BOOK, FRAME, ADMISSION)
    assert batch.events.height == 3 and batch.dead == []


def test_a_duplicated_json_key_is_refused_as_ambiguous() -> None:
    # polars keeps the first value, pydantic the last: which tenant pays is
    # ambiguous, so the line is refused, however the key is spelled.
    for doubled in (
        line(event())[:-1] + b',"tenant":"second"}',
        line(event())[:-1] + b',"t\\u0065nant":"second"}',
    ):
        decoded = decode([Message(0, 0, doubled), Message(0, 1, line(event(event_id="x")))])
        assert decoded.events["event_id"].to_list() == ["x"]
        assert [d.reason.split(":")[0] for d in decoded.dead] == ["duplicate_key"]


def test_redaction_removes_prompts_and_keys_at_any_depth_and_in_broken_lines() -> None:
    canary, key = "CANARY-PROMPT-7f3a", "sk-live-CANARYKEY0123456789"
    nested = json.dumps({"meta": {"messages": [{"content": canary}]}, "x": f"Bearer {key}"})
    assert canary not in redact(nested.encode()).decode()
    assert key not in redact(nested.encode()).decode()
    broken = f'{{"prompt": "{canary}", "tenant": '.encode()
    assert canary.encode() not in redact(broken)
    assert key.encode() not in redact(f"garbage {key} more".encode())
    assert canary.encode() not in redact(f'{{"API_KEY": "{canary}"}}'.encode())


def test_hostile_lines_are_dead_lettered_and_the_batch_survives() -> None:
    hostile = [
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        line(event(input_tokens=10**30)),
        line(event())[:-1] + b',"latency_ms":NaN}',
        line(event())[:-1] + b',"latency_ms":1e400}',
        line(event(tenant="x")).replace(b'"x"', b'"\xff\xfe"'),
        line(event(tenant="x")).replace(b'"x"', b'"\\ud800"'),
        bytes(range(256)),
    ]
    good = line(event(event_id="good"))
    batch = prepare([Message(0, 0, b"\n".join([good, *hostile]))], BOOK, FRAME, ADMISSION)
    assert batch.events["event_id"].to_list() == ["good"]
    assert len(batch.dead) == len(split_lines(b"\n".join(hostile)))


# --- every line ends as exactly one of counted, duplicate, dead-lettered ------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def _lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    ev = event(
        event_id=draw(st.sampled_from(["a", "b", "c"])),
        input_tokens=draw(st.sampled_from([100, 200])),
    )
    if kind == "mutated":
        ev[draw(st.sampled_from(sorted(ev)))] = draw(_json_values)
    return line(ev)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_lines(), min_size=1, max_size=4), min_size=1, max_size=6))
def test_every_line_is_counted_duplicate_or_dead_lettered_exactly_once(
    msgs: list[list[bytes]],
) -> None:
    batch = prepare(
        [Message(0, i, b"\n".join(lines)) for i, lines in enumerate(msgs)], BOOK, FRAME, ADMISSION
    )
    produced = sum(len(split_lines(b"\n".join(lines))) for lines in msgs)
    places = [(r[0], r[1]) for r in batch.events.select("offset", "line").rows()]
    places += [(d.offset, d.line) for d in batch.dead]
    assert len(places) == len(set(places))  # no line in two places
    assert batch.events.height + len(batch.dead) + sum(batch.duplicates.values()) == produced


# --- aggregation: shuffles, batch splits and repetitions give the same totals --

_priced = st.builds(
    lambda i, tenant, model, tokens, minute: event(
        event_id=f"e{i}",
        tenant=tenant,
        model=model,
        input_tokens=tokens,
        output_tokens=tokens // 7,
        ts=f"2025-11-01T10:{minute:02d}:30Z",
    ),
    st.integers(0, 10**6),
    st.sampled_from(["a", "b"]),
    st.sampled_from(["claude-4.5-sonnet", "gpt-4o", "not-in-the-book"]),
    st.integers(0, 10**6),
    st.integers(0, 3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_priced, min_size=1, max_size=25, unique_by=lambda e: e["event_id"]),
    st.randoms(use_true_random=False),
    st.integers(1, 6),
)
def test_shuffle_split_and_repeat_give_the_same_totals(
    evs: list[dict[str, Any]], rnd: Any, parts: int
) -> None:
    whole = expected(messages(evs, per_message=4), BOOK, ADMISSION)
    noisy = [*evs, *rnd.sample(evs, len(evs) // 2)]  # re-sends
    rnd.shuffle(noisy)
    again = expected([Message(0, i, line(e)) for i, e in enumerate(noisy)], BOOK, ADMISSION)
    assert again.windows == whole.windows
    assert again.duplicates == len(evs) // 2

    # Split into batches (no repeats across them): partial sums add up exactly.
    cuts = sorted(rnd.sample(range(1, len(evs)), min(parts, len(evs)) - 1))
    chunks = [evs[a:b] for a, b in zip([0, *cuts], [*cuts, len(evs)], strict=True)]
    partial = [prepare(messages(c), BOOK, FRAME, ADMISSION).windows for c in chunks]
    assert {w.key(): w for w in combine(*partial)} == whole.windows


def test_two_spellings_of_one_event_are_one_event() -> None:
    """The fingerprint is computed from the decoded, canonical event: escaped
    keys and values, another key order, -0 for 0 and +00:00 for Z spell the
    same event, which counts once (a duplicate, never a conflict)."""
    plain = line(event())
    spelled = (
        b'{"status":"ok","t\\u0065nant":"\\u0061cme","batch":false,"cache_write_tokens":-0,'
        b'"ts":"2025-11-01T10:00:30+00:00","event_id":"e-1","route":"\\/v1\\/chat",'
        b'"feature":"support-bot","model":"claude-4.5-sonnet","provider":"anthropic",'
        b'"node_id":"gw-1","request_id":"r-1","attempt":1,"input_tokens":4000,'
        b'"output_tokens":500,"cache_read_tokens":0}'
    )
    batch = prepare([Message(0, 0, plain), Message(0, 1, spelled)], BOOK, FRAME, ADMISSION)
    assert batch.events.height == 1 and batch.dead == [] and batch.duplicates[0] == 1
