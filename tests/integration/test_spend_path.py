"""The issue's own flow, on a stream this project's simulator never made:
finops up && db upgrade && prices load && replay && worker --drain."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipeline.spend.windows import COUNTERS
from tests import reference
from tests.integration.conftest import private_env, run_cli

pytestmark = pytest.mark.integration

HEADER = (
    "model,provider,effective_from,input_per_mtok,output_per_mtok,cache_read_per_mtok,"
    "cache_write_per_mtok,batch_discount\n"
)
PRICES = (
    HEADER
    + """claude-4.5-sonnet,anthropic,2025-01-01T00:00:00Z,3.00,15.00,0.30,3.75,0.5
claude-4.5-sonnet,anthropic,2025-11-05T12:15:00Z,2.50,12.50,0.25,3.125,0.5
gpt-4o,openai,2024-08-06T00:00:00+00:00,2.50,10.00,1.25,2.50,0.5
"""
)
LATE_PRICE = (
    HEADER
    + """mystery-1,newco,2025-11-01T00:00:00Z,0.70,2.10,0.07,0.70,0.25
"""
)
MODELS = [("claude-4.5-sonnet", "anthropic"), ("gpt-4o", "openai"), ("mystery-1", "newco")]
START = datetime(2025, 11, 5, 12, 0, tzinfo=UTC)


def make_events(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        model, provider = rng.choices(MODELS, [5, 4, 1])[0]
        inp = rng.randint(1, 20_000)
        read = rng.randint(0, inp) if rng.random() < 0.5 else 0
        write = rng.randint(0, inp - read) if rng.random() < 0.2 else 0
        attempt = rng.choices([1, 2, 3], [90, 8, 2])[0]
        ts = START + timedelta(seconds=rng.uniform(0, 1800), microseconds=rng.randint(0, 999))
        events.append(
            {
                "event_id": f"ev-{seed}-{i}",
                "ts": ts.isoformat().replace("+00:00", "Z")
                if rng.random() < 0.5
                else ts.astimezone().isoformat(),
                "tenant": f"tenant-{rng.randint(1, 6)}",
                "route": rng.choice(["/chat", "/extract"]),
                "feature": rng.choice(["bot", "ocr", "search"]),
                "model": model,
                "provider": provider,
                "node_id": f"node-{rng.randint(1, 4)}",
                "request_id": f"rq-{i // 2}",
                "attempt": attempt,
                "input_tokens": inp,
                "output_tokens": rng.randint(0, 4000),
                "cache_read_tokens": read,
                "cache_write_tokens": write,
                "batch": rng.random() < 0.1,
                "status": rng.choice(["ok"] * 8 + ["error", "invalid_output"]),
                "latency_ms": rng.randint(50, 9000),
                "some_future_field": {"x": i},
            }
        )
    return events


def bad_lines(ev: dict[str, Any]) -> list[bytes]:
    def variant(**change: Any) -> bytes:
        return json.dumps(
            {**ev, "event_id": f"bad-{len(change)}-{next(iter(change))}", **change}
        ).encode()

    missing = dict(ev)
    del missing["request_id"]
    return [
        b"this is not json",
        b'["an", "array"]',
        b"{}",
        b"\xff\xfe\x00garbage",
        json.dumps(missing).encode(),
        variant(input_tokens=-3),
        variant(output_tokens="many"),
        variant(ts="2025-11-05T12:00:00"),
        variant(cache_read_tokens=ev["input_tokens"], cache_write_tokens=1),
        variant(tenant=""),
        variant(prompt="please summarise our secret roadmap"),
    ]


def jsonl(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


COLUMNS = COUNTERS  # every summed column of spend_window


def database_url(env_vars: dict[str, str]) -> str:
    state = json.loads(Path(env_vars["FINOPS_HOME"], "embedded.json").read_text())
    return str(state["database_url"])


def stored_windows(env_vars: dict[str, str]) -> dict[Any, dict[str, Any]]:
    """Every spend_window row, keyed as the reference keys windows."""
    with psycopg.connect(database_url(env_vars)) as conn:
        rows = conn.execute(
            "SELECT window_start, tenant, route, feature, provider, model, "
            f"{', '.join(COLUMNS)} FROM spend_window"
        ).fetchall()
    return {tuple(r[:6]): dict(zip(COLUMNS, r[6:], strict=True)) for r in rows}


def assert_matches(actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert set(actual) == set(expected)
    for key, exp in expected.items():
        for col, value in actual[key].items():
            assert Decimal(value) == Decimal(exp.get(col, 0)), (key, col, value, exp.get(col))


def test_cli_flow_on_an_unseen_stream_is_exact(tmp_path: Path) -> None:
    env = private_env(tmp_path / "home")
    env.update(
        FINOPS_PARTITIONS="3",
        FINOPS_BATCH_MESSAGES="4",
        FINOPS_EVENTS_PER_MESSAGE="40",
        # The stream is dated 2025; the age bound has its own tests.
        FINOPS_MAX_EVENT_AGE_DAYS="3650",
    )
    events = make_events(seed=11, n=2400)
    rng = random.Random(5)
    first, second = events[:1500], events[1500:]
    # Disorder: event time is not log order.
    rng.shuffle(first)
    rng.shuffle(second)
    resent_in_file = rng.sample(first, 30)  # re-sent within the same replay
    resent_later = rng.sample(first, 45)  # re-sent after they were committed
    file1_lines = [reference_line(e) for e in first + resent_in_file]
    rng.shuffle(file1_lines)
    bad = bad_lines(events[0])
    file2_lines = [reference_line(e) for e in second + resent_later] + bad
    rng.shuffle(file2_lines)
    (tmp_path / "P.csv").write_text(PRICES)
    (tmp_path / "E1.jsonl").write_bytes(jsonl(file1_lines))
    (tmp_path / "E2.jsonl").write_bytes(jsonl(file2_lines))

    try:
        for args in (
            ("up",),
            ("db", "upgrade"),
            ("prices", "load", str(tmp_path / "P.csv")),
            ("replay", str(tmp_path / "E1.jsonl")),
            ("worker", "--drain"),
            ("replay", str(tmp_path / "E2.jsonl")),
            ("worker", "--drain"),
        ):
            run_cli(args, env)

        prices = reference.parse_prices(PRICES)
        produced = first + resent_in_file + second + resent_later
        # Every window row, every column, to the last digit.
        assert_matches(
            stored_windows(env), reference.totals(produced, prices, reference.window_key)
        )

        with psycopg.connect(database_url(env)) as conn:
            assert conn.execute("SELECT count(*) FROM seen_event").fetchone() == (len(events),)
            assert conn.execute("SELECT count(*) FROM price_book").fetchone() == (3,)
            dead = conn.execute("SELECT raw, reason FROM dead_letter").fetchall()
            accepted, dups, dl = conn.execute(
                "SELECT sum(events_accepted), sum(events_duplicate), sum(lines_dead_lettered)"
                " FROM sink_offset"
            ).fetchone()
            unpriced_rows = conn.execute("SELECT count(*) FROM unpriced_event").fetchone()[0]
        assert (accepted, dups, dl) == (len(events), 75, len(bad))
        raws = {bytes(r) for r, _ in dead}
        assert raws - {b for b in raws if b"<redacted>" in b} == {
            b for b in bad if b"prompt" not in b
        }
        assert not any(b"secret roadmap" in r for r in raws)
        assert all(
            reason.split(":")[0] in {"not_json", "not_object", "schema", "text_field"}
            for _, reason in dead
        )
        mystery = sum(1 for e in events if e["model"] == "mystery-1")
        assert unpriced_rows == mystery > 0

        # The missing price arrives: loading it reprices the stored windows.
        (tmp_path / "late.csv").write_text(LATE_PRICE)
        out = run_cli(("prices", "load", str(tmp_path / "late.csv")), env).stdout
        assert f"repriced {mystery}" in out
        prices = reference.parse_prices(PRICES + LATE_PRICE.split("\n", 1)[1])
        assert_matches(
            stored_windows(env), reference.totals(produced, prices, reference.window_key)
        )
        with psycopg.connect(database_url(env)) as conn:
            assert conn.execute("SELECT count(*) FROM unpriced_event").fetchone() == (0,)

        report = run_cli(("spend", "--by", "tenant"), env).stdout
        assert "tenant-1" in report and "total cost" in report
    finally:
        run_cli(("down",), env, check=False)


def reference_line(e: dict[str, Any]) -> bytes:
    return json.dumps(e).encode()
