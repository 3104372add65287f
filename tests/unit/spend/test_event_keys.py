"""The dedup keys are permanent (seen_event keeps them forever), so the way
they are computed must never change: a re-send after an upgrade must still
find its key. Earlier versions hashed each event's text with hashlib in
Python; the keys are now computed in polars (polars-hash)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from models.contracts import FORBIDDEN_CHARS
from pipeline.spend.batch import KEY_FIELDS, with_keys
from pipeline.spend.codec import ADDED, SCHEMA, decode
from tests.factories import event, messages

_FORBIDDEN = [c for c in map(chr, range(0xD800)) if re.match(f"[{FORBIDDEN_CHARS}]", c)]

# The contract's identifiers: 1..256 characters, not blank, none of its
# forbidden characters; any script (CJK, emoji, combining marks), which is
# where byte encodings differ.
_IDENT = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=_FORBIDDEN),
    min_size=1,
    max_size=40,
).filter(lambda s: not s.isspace())


def _as_stored_before(events: pl.DataFrame) -> list[tuple[str, str]]:
    """(event_key, fingerprint) as the hashlib version computed them."""
    canonical = [
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") if c == "ts" else pl.col(c).cast(pl.String)
        for c in SCHEMA
        if c not in ADDED  # the fields of the first contract
    ]
    texts = events.select(
        pl.concat_str([pl.col(c) for c in KEY_FIELDS], separator="\x00").alias("k"),
        pl.concat_str([c.fill_null("\x00null") for c in canonical], separator="\x00").alias("f"),
    )
    return [
        (hashlib.md5(k.encode()).hexdigest(), hashlib.md5(f.encode()).hexdigest())
        for k, f in texts.iter_rows()
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"tenant": _IDENT, "node_id": _IDENT, "event_id": _IDENT, "route": _IDENT},
            optional={
                "latency_ms": st.integers(0, 10**6),
                "retry_reason": _IDENT,
                "batch_size": st.integers(1, 512),
            },
        ),
        min_size=1,
        max_size=12,
    )
)
def test_event_keys_and_fingerprints_are_the_ones_earlier_versions_stored(
    fields: list[dict[str, Any]],
) -> None:
    decoded = decode(messages([event(**f) for f in fields]))
    assert not decoded.dead
    # In the order of the lines (a line with an escape is decoded apart).
    events = decoded.events.sort("partition", "offset", "line")
    keyed = with_keys(events)
    assert list(keyed.select("event_key", "fingerprint").iter_rows()) == _as_stored_before(events)
    # And the key is the md5 of the identity itself, as the README documents it.
    assert keyed["event_key"].to_list() == [
        hashlib.md5("\x00".join(str(f[k]) for k in KEY_FIELDS).encode()).hexdigest() for f in fields
    ]


def test_a_field_added_later_changes_the_fingerprint_only_when_it_is_set() -> None:
    plain = event(event_id="e")
    decoded = decode(
        messages(
            [
                plain,
                {**plain, "reasoning_tokens": 0, "cache_write_1h_tokens": 0},
                {**plain, "reasoning_tokens": 1},
                {**plain, "region": "eu-west-1"},
                {**plain, "service_tier": "standard"},
                {**plain, "service_tier": "priority"},
            ]
        )
    )
    assert not decoded.dead
    prints = with_keys(decoded.events.sort("offset"))["fingerprint"].to_list()
    assert prints[0] == prints[1] == _as_stored_before(decoded.events.sort("offset"))[0][1]
    assert prints[4] == prints[0]  # an explicit standard tier says what none says
    assert len({prints[0], prints[2], prints[3], prints[5]}) == 4
