"""Builders for test events: plain dicts as a producer would send them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from pipeline.stream.admission import Admission
from pipeline.stream.message import Message

# The fixtures below are dated 2025-11-01; admit them as if it were the next day.
ADMISSION = Admission(now=datetime(2025, 11, 2, tzinfo=UTC))


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "ts": "2025-11-01T10:00:30Z",
        "tenant": "acme",
        "route": "/v1/chat",
        "feature": "support-bot",
        "model": "claude-4.5-sonnet",
        "provider": "anthropic",
        "node_id": "gw-1",
        "request_id": "r-1",
        "attempt": 1,
        "input_tokens": 4000,
        "output_tokens": 500,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "batch": False,
        "status": "ok",
    }
    base.update(overrides)
    return base


def cache_event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "node_id": "gpu-a1",
        "ts": "2025-11-01T10:00:00Z",
        "tenant": "acme",
        "route": "/v1/chat",
        "layer": "prefix",
        "op": "evict",
        "tokens": 300,
        "owner_tenant": "globex",
        "model": "qwen3-32b",
        "provider": "self-hosted",
        "output_tokens": 20,
        "count": 1,
    }
    base.update(overrides)
    return base


def line(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode()


def messages(
    events: list[dict[str, Any]], per_message: int = 3, partition: int = 0
) -> list[Message]:
    lines = [line(e) for e in events]
    return [
        Message(partition, i, b"\n".join(lines[k : k + per_message]))
        for i, k in enumerate(range(0, len(lines), per_message))
    ]


def utc_datetimes(first_year: int, last_year: int) -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes from ``first_year`` to ``last_year`` (hypothesis
    takes the bounds naive)."""
    first, last = (
        datetime(y, 1, 1, tzinfo=UTC).replace(tzinfo=None) for y in (first_year, last_year)
    )
    return st.datetimes(first, last, timezones=st.just(UTC))
