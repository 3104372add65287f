"""Database refusals are classified: a write refused for a reason no retry
fixes isolates the lines it refuses (dead-lettered as db_rejected) and
applies the rest; a refusal no line explains stops the sink after its stall
limit instead of wedging the partition in silence. The refusals here are
CHECK constraints the test adds: what a value out of range or a violated
rule looks like to the sink."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from models.prices import PriceBook
from pipeline.cache.sink import CacheSink
from pipeline.energy.telemetry_sink import TelemetrySink
from pipeline.spend.batch import prepare
from pipeline.spend.price_store import default_prices
from pipeline.spend.pricing import book_frame
from pipeline.spend.sink import SpendSink
from pipeline.stream.message import Message
from pipeline.stream.offsets import OffsetSink
from pipeline.stream.pg import Stalled
from tests.factories import ADMISSION, cache_event, event, line
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

BOOK = PriceBook(tuple(default_prices()))
FRAME = book_frame(BOOK)


def _alter(env: Env, sql: str) -> None:
    with psycopg.connect(env.database_url) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _refuse(env: Env, table: str, column: str) -> None:
    _alter(env, f"ALTER TABLE {table} ADD CONSTRAINT refuse_evil CHECK ({column} <> 'evil')")


async def _claimed(sink: OffsetSink, run: Any) -> Any:
    try:
        await sink.claim([0])
        return await asyncio.wait_for(run(), timeout=60)
    finally:
        await sink.close()


def _dead(env: Env, topic: str) -> list[tuple[object, ...]]:
    return env.query(
        "SELECT \"offset\", line, split_part(reason, ':', 1) FROM dead_letter"
        " WHERE topic = %s ORDER BY 1, 2",
        (topic,),
    )


def test_a_spend_batch_the_database_refuses_in_part_applies_the_rest(env: Env) -> None:
    _refuse(env, "spend_window", "tenant")
    evil = line(event(event_id="x", tenant="evil"))
    batch = [
        Message(0, 0, line(event(event_id="a")) + b"\n" + evil + b"\n" + evil),
        Message(0, 1, line(event(event_id="b", tenant="globex"))),
    ]
    sink = SpendSink(env.database_url, "u")
    applied = asyncio.run(
        _claimed(sink, lambda: sink.apply(prepare(batch, BOOK, FRAME, ADMISSION), BOOK))
    )
    assert (applied.accepted, applied.dead_lettered) == (2, 2)
    # The refused line and its in-batch copy; the rest counted, once.
    assert _dead(env, "u") == [(0, 1, "db_rejected"), (0, 2, "db_rejected")]
    assert env.query("SELECT tenant, attempts FROM spend_window ORDER BY 1") == [
        ("acme", 1),
        ("globex", 1),
    ]
    assert env.query("SELECT count(*) FROM seen_event") == [(2,)]
    assert env.query(
        "SELECT next_offset, events_accepted, lines_dead_lettered FROM sink_offset"
        " WHERE topic = 'u'"
    ) == [(2, 2, 2)]
    assert sink.faults["db_rejected"] >= 1


def test_the_side_sinks_isolate_refused_lines_too(env: Env) -> None:
    _refuse(env, "cache_window", "tenant")
    _refuse(env, "gpu_last_sample", "node_id")
    cache = CacheSink(env.database_url, "c")
    cache_lines = [line(cache_event(tenant=t, op="hit")) for t in ("acme", "evil", "globex")]
    asyncio.run(_claimed(cache, lambda: cache.apply([Message(0, 0, b"\n".join(cache_lines))])))
    assert _dead(env, "c") == [(0, 1, "db_rejected")]
    assert env.query("SELECT tenant FROM cache_window ORDER BY 1") == [("acme",), ("globex",)]

    telemetry = TelemetrySink(env.database_url, "t")
    samples = [
        json.dumps(
            {"node_id": node, "gpu": "0", "ts": "2025-11-01T10:00:00Z", "power_w": 100.0}
        ).encode()
        for node in ("n1", "evil")
    ]
    asyncio.run(
        _claimed(
            telemetry,
            lambda: telemetry.apply([Message(0, 0, samples[0]), Message(0, 1, samples[1])]),
        )
    )
    assert _dead(env, "t") == [(1, 0, "db_rejected")]
    assert env.query("SELECT node_id FROM gpu_last_sample") == [("n1",)]


def test_a_refusal_no_line_explains_stops_the_sink_after_its_stall_limit(env: Env) -> None:
    """The offsets themselves are refused: no line can be left out to make
    the write pass, so the sink retries (a fault line and a counter each
    time) and then raises, which stops the stage and the process."""
    _alter(env, "ALTER TABLE sink_offset ADD CONSTRAINT refuse_all CHECK (next_offset = 0)")
    sink = SpendSink(env.database_url, "u")
    sink.stall_s = 1.0
    batch = prepare([Message(0, 0, line(event()))], BOOK, FRAME, ADMISSION)
    with pytest.raises(Stalled):
        asyncio.run(_claimed(sink, lambda: sink.apply(batch, BOOK)))
    assert sink.faults["sink_error"] >= 2
    assert env.query("SELECT count(*) FROM spend_window") == [(0,)]


def test_a_refusal_every_line_shares_is_not_blamed_on_the_lines(env: Env) -> None:
    """The database refuses every line alike (here every window): that says
    nothing about the lines, so none is dead-lettered; the sink stalls."""
    _alter(env, "ALTER TABLE spend_window ADD CONSTRAINT refuse_all CHECK (attempts < 0)")
    sink = SpendSink(env.database_url, "u")
    sink.stall_s = 1.0
    evs = [Message(0, 0, b"\n".join(line(event(event_id=f"e{i}")) for i in range(4)))]
    with pytest.raises(Stalled):
        asyncio.run(_claimed(sink, lambda: sink.apply(prepare(evs, BOOK, FRAME, ADMISSION), BOOK)))
    assert env.query("SELECT count(*) FROM dead_letter") == [(0,)]
