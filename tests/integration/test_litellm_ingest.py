"""LiteLLM through the front door, with the real proxy: the OpenAI SDK sends
calls through a pinned LiteLLM proxy (models answering with mock_response,
no network), whose generic_api callback posts to ``finops ingest serve``;
and LiteLLM in-process with FinopsLogger publishing to Kafka. After a
drain, every call is in spend_window under its tenant, route and feature,
with its tokens, costed by our price book as LiteLLM costs it."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.embedded.runtime import free_port
from tests.integration.conftest import Env
from tests.integration.ingest_door import running_door
from tests.peers.litellm_proxy import proxy_python, run_peer, running_proxy
from tests.peers.litellm_venv import bundled_map

pytestmark = pytest.mark.integration

CACHED_READ = {
    "id": "chatcmpl-mock-read", "object": "chat.completion", "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "COMPLETION-TEXT"}}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234,
              "prompt_tokens_details": {"cached_tokens": 1000},
              "completion_tokens_details": {"reasoning_tokens": 5}},
}  # fmt: skip
CACHE_WRITE = {
    "id": "msg-mock-write", "object": "chat.completion", "model": "claude-sonnet-4-5",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "COMPLETION-TEXT"}}],
    "usage": {"prompt_tokens": 2100, "completion_tokens": 50, "total_tokens": 2150,
              "cache_creation_input_tokens": 1500, "cache_read_input_tokens": 500,
              "prompt_tokens_details": {"cached_tokens": 500}},
}  # fmt: skip
# (tenant, route, feature) -> attempts, input, output, cache read, cache write
WANT = {
    ("alice", "chat", "summarize"): (2, 2400, 68, 2000, 0),
    ("bob", "agent", "plan"): (1, 2100, 50, 500, 1500),
    ("carol", "chat", "default"): (1, 0, 0, 0, 0),
}
SUMS = (
    "sum(attempts), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),"
    " sum(cache_write_tokens)"
)


def import_litellm_prices(env: Env) -> None:
    env.finops("prices", "import-litellm", str(bundled_map(proxy_python())),
               "--effective-from", "2025-01-01")  # fmt: skip


def spend(env: Env) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    rows = env.query(f"SELECT tenant, route, feature, {SUMS}, sum(cost_usd) FROM spend_window"
                     " GROUP BY 1, 2, 3")  # fmt: skip
    return {(str(r[0]), str(r[1]), str(r[2])): tuple(r[3:]) for r in rows}


def ours_equal_theirs(ours: Decimal, theirs: float) -> None:
    """LiteLLM adds floats; our cost is exact. They agree to float noise."""
    assert abs(ours - Decimal(repr(theirs))) <= Decimal("1e-12") + abs(ours) * Decimal("1e-9")


def proxy_config(tmp: Path, door_url: str) -> Path:
    """As docs/guides/ingest.md says: a named generic_api callback; the key
    comes from the proxy's environment (GENERIC_LOGGER_HEADERS)."""
    config = {
        "model_list": [
            {"model_name": "read", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_key": "sk-fake", "mock_response": CACHED_READ}},
            {"model_name": "write", "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5", "api_key": "sk-ant-fake",
                "mock_response": CACHE_WRITE}},
            {"model_name": "fails", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_key": "sk-fake",
                "mock_response": "litellm.RateLimitError"}},
            {"model_name": "primary", "litellm_params": {
                "model": "openai/gpt-4o", "api_key": "sk-fake",
                "mock_response": "litellm.InternalServerError"}},
        ],
        "litellm_settings": {"callbacks": ["finops"], "turn_off_message_logging": True},
        "callback_settings": {"finops": {
            "callback_type": "generic_api", "endpoint": door_url + "/v1/litellm",
            "headers": {}, "log_format": "json_array", "max_retries": 5}},
        "router_settings": {"num_retries": 0, "fallbacks": [{"primary": ["read"]}]},
    }  # fmt: skip
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def accepted(log: Path) -> int:
    """LiteLLM events the door accepted, from its per-request log lines."""
    lines = [line for line in log.read_text().splitlines() if "ingest litellm" in line]
    return sum(
        int(part.split("=")[1]) for line in lines for part in line.split()
        if part.startswith("accepted=")
    )  # fmt: skip


def wait_for(log: Path, events: int, timeout_s: float = 60) -> None:
    """Until the door has accepted ``events`` LiteLLM events (the callback
    posts in the background after each answer)."""
    deadline = time.monotonic() + timeout_s
    while accepted(log) < events:
        assert time.monotonic() < deadline, f"the door accepted {accepted(log)} of {events}"
        time.sleep(0.2)


def test_the_real_litellm_proxy_posts_every_call_to_the_door(env: Env, tmp_path: Path) -> None:
    import_litellm_prices(env)
    calls = [
        {"model": "read", "user": "alice", "tags": ["route:chat", "feature:summarize"]},
        {"model": "read", "user": "alice", "tags": ["route:chat", "feature:summarize"]},
        {"model": "write", "user": "bob", "tags": ["route:agent", "feature:plan"]},
        {"model": "fails", "user": "carol", "tags": ["route:chat"]},
        # a failure and its fallback: one request, two attempts
        {"model": "primary", "user": "dave", "tags": ["route:fallback", "feature:retry"]},
    ]
    with running_door(env) as door:
        config = proxy_config(tmp_path, door.url)
        headers = {"GENERIC_LOGGER_HEADERS": f"Authorization=Bearer {door.any_key}"}
        with running_proxy(config, free_port(), tmp_path / "proxy.log", **headers) as (
            url,
            master,
        ):
            results = run_peer("litellm_calls.py", {"base_url": url, "key": master, "calls": calls})
            wait_for(env.home / "ingest.log", 6)
    env.finops("worker", "--drain")

    assert [r["ok"] for r in results] == [True, True, True, False, True]
    got = spend(env)
    for key, want in WANT.items():
        assert got[key][:5] == want, key
    fallback = got[("dave", "fallback", "retry")]
    answered = results[4]["usage"]
    assert fallback[:3] == (2, answered["prompt_tokens"], answered["completion_tokens"])
    rows = env.query(
        "SELECT sum(requests), sum(failed_attempts), sum(retry_attempts) FROM spend_window"
        " WHERE tenant = 'dave'"
    )
    assert tuple(rows[0]) == (1, 1, 1)
    # Our price book (imported from LiteLLM's map) costs each call as the
    # proxy did: the cost it reported to the client, per tenant.
    reported: dict[str, Decimal] = {}
    for r in results:
        if r["ok"]:
            reported[r["user"]] = reported.get(r["user"], Decimal(0)) + Decimal(r["cost"])
    for (tenant, _, _), row in got.items():
        if tenant in reported:
            ours_equal_theirs(row[5], float(reported[tenant]))
    assert got[("carol", "chat", "default")][5] == 0
    # No prompt or completion text was kept anywhere.
    assert not env.query("SELECT count(*) FROM dead_letter")[0][0]


def test_finops_logger_publishes_litellms_calls_to_kafka(env: Env) -> None:
    import_litellm_prices(env)
    calls = [
        {"model": "openai/gpt-4o-mini", "user": "erin", "tags": ["route:chat", "feature:ask"],
         "mock": CACHED_READ},
        {"model": "anthropic/claude-sonnet-4-5", "user": "frank",
         "tags": ["route:agent", "feature:plan"], "mock": CACHE_WRITE},
        {"model": "openai/gpt-4o-mini", "user": "gina", "tags": ["route:chat"],
         "mock": "litellm.RateLimitError"},
    ]  # fmt: skip
    out = run_peer(
        "litellm_logger.py", {"calls": calls},
        FINOPS_KAFKA_URL=env.kafka_url, FINOPS_USAGE_TOPIC=env.topic, FINOPS_COMPRESSION="none",
    )  # fmt: skip
    assert out[-1] == {"published": 3, "failed": 0}
    env.finops("worker", "--drain")
    got = spend(env)
    assert got[("erin", "chat", "ask")][:5] == (1, 1200, 34, 1000, 0)
    assert got[("frank", "agent", "plan")][:5] == (1, 2100, 50, 500, 1500)
    assert got[("gina", "chat", "default")][:2] == (1, 0)
    reasoning = env.query("SELECT sum(reasoning_tokens) FROM spend_window WHERE tenant = 'erin'")
    assert reasoning == [(5,)]
    # Each call costs what LiteLLM charged for it, from the same price map.
    charged = {r["user"]: r["cost"] for r in out[:-1] if r["ok"]}
    assert set(charged) == {"erin", "frank"} and all(charged.values())
    ours_equal_theirs(got[("erin", "chat", "ask")][5], charged["erin"])
    ours_equal_theirs(got[("frank", "agent", "plan")][5], charged["frank"])
