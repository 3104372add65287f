"""Migration 0015 on windows written before it: the cost of each window is
split by token kind, and the kinds add up to the cost exactly, whether a
price explains the window or not."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from pipeline.storage import db
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

KINDS = (
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_5m_cost_usd",
    "cache_write_1h_cost_usd",
    "output_cost_usd",
    "reasoning_cost_usd",
)


def test_windows_before_0015_are_split_by_kind_and_add_up(stack: Stack) -> None:
    name = f"m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = db.with_database(stack.admin_url, name)
    db.upgrade(url, "0014")
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO price_book (model, provider, effective_from, input_per_mtok,"
            " output_per_mtok, cache_read_per_mtok, cache_write_per_mtok, batch_discount, source)"
            " VALUES ('m', 'p', '2025-11-01T10:00:30Z', 3, 15, 0.3, 3.75, 0, 'test')"
        )
        windows = [
            # priced by the version that starts within its minute
            ("2025-11-01T10:00:00Z", "m", 4000, 500, 1000, 0, Decimal("0.0168")),
            # 1/3 splits: a remainder the truncation leaves to the output
            ("2025-11-01T10:01:00Z", "m", 1, 1, 0, 0, Decimal("0.0000000000000001")),
            # no price explains it (a model since removed)
            ("2025-11-01T10:02:00Z", "gone", 100, 10, 0, 0, Decimal("0.00045")),
        ]
        for ts, model, inp, out, read, write, cost in windows:
            conn.execute(
                "INSERT INTO spend_window (window_start, tenant, route, feature, provider, model,"
                " attempts, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
                " cost_usd) VALUES (%s, 't', 'r', 'f', 'p', %s, 1, %s, %s, %s, %s, %s)",
                (ts, model, inp, out, read, write, cost),
            )
    db.upgrade(url)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT model, cost_usd, {', '.join(KINDS)} FROM spend_window ORDER BY window_start"
        ).fetchall()
    for model, cost, *kinds in rows:
        assert sum(kinds, Decimal(0)) == cost, model
        assert all(k >= 0 for k in kinds), model
    first = rows[0]
    # 3,000 uncached at 3, 1,000 read at 0.30, 500 out at 15: 9,000 + 300 + 7,500.
    assert first[2:] == (Decimal("0.009"), Decimal("0.0003"), 0, 0, Decimal("0.0075"), 0)
    assert rows[2][2] == Decimal("0.00045")  # unexplained: all uncached input
