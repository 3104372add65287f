"""Our cost equals LiteLLM's, model by model, for every chat model of the
price map the pinned LiteLLM ships: the map imported with `finops prices
import-litellm`, one event per case through the real pipeline (broker,
worker, PostgreSQL), each case's window against `litellm.completion_cost`
(or LiteLLM's batch cost calculator for the batch tier) run in LiteLLM's
own venv with no network. A difference passes only when it is explained
as LiteLLM's own inconsistency, and the explanations are printed."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.litellm_prices import parse_litellm, resolve_aliases
from models.prices import PriceEntry
from tests.integration.conftest import Env
from tests.peers.litellm_venv import bundled_map, litellm_costs, litellm_python

pytestmark = pytest.mark.integration

EFFECTIVE = "2025-01-01T00:00:00Z"
TS = "2025-06-01T00:00:00Z"
TOLERANCE = Decimal("1e-12")  # relative: LiteLLM computes in binary floats


def _usage(prompt: int, *, cached: bool) -> dict[str, int]:
    """A prompt of ``prompt`` tokens; with ``cached``, reads, 5m and 1h
    writes and thinking in it."""
    if not cached:
        return {"prompt": prompt, "read": 0, "write_5m": 0, "write_1h": 0,
                "completion": 500, "reasoning": 0}  # fmt: skip
    return {"prompt": prompt, "read": prompt // 2, "write_5m": prompt // 10,
            "write_1h": prompt // 20, "completion": 900, "reasoning": 400}  # fmt: skip


def _litellm_provider(provider: str) -> str:
    if provider.startswith("vertex_ai"):
        return "vertex_ai"
    return "bedrock" if provider == "bedrock_converse" else provider


_THRESHOLD = re.compile(r"_above_(\d+)(k?)_tokens")


def map_thresholds(spec: dict[str, Any]) -> set[int]:
    """Every prompt size at which the map says some rate of the entry
    switches, read from the map itself (not from what we imported)."""
    sizes = {int(n) * (1000 if k else 1) for key in spec for n, k in _THRESHOLD.findall(key)}
    for tier in spec.get("tiered_pricing") or []:
        sizes.update(int(b) for b in tier["range"])
    return sizes - {0}


def cases(doc: dict[str, Any], entries: list[PriceEntry]) -> list[dict[str, Any]]:
    """For every imported (model, provider, region) of a chat model: plain
    and cached usages at the standard, priority, flex and batch tiers, at
    and just above every threshold the map names for it."""
    groups = sorted({(e.model, e.provider, e.region) for e in entries})
    out: list[dict[str, Any]] = []
    for model, provider, region in groups:
        key = f"bedrock/{region}/{model}" if region else model
        spec = doc[key]
        if spec.get("mode") != "chat":
            continue
        batch_rates = spec.get("input_cost_per_token_batches") is not None
        for tier in ("standard", "priority", "flex", "batch"):
            prompts = [(12_000, True)] + ([(1_000, False)] if tier == "standard" else [])
            prompts += [(p, True) for n in sorted(map_thresholds(spec)) for p in (n, n + 1)]
            if tier == "batch" and not batch_rates:
                # LiteLLM's half-price path for a map with no batch rates
                # ignores thresholds and the 1h rate, and bills cached
                # tokens at 0 when there is no cache-read rate: a plain
                # call is where it and the half discount agree.
                prompts = [(1_000, False)]
            for prompt, cached in prompts:
                out.append(
                    {
                        "id": len(out),
                        "key": key,
                        "model": model,
                        "book_provider": provider,
                        "provider": _litellm_provider(provider),
                        "region": region or None,
                        "tier": tier,
                        **_usage(prompt, cached=cached),
                    }
                )
    return out


def event(case: dict[str, Any]) -> dict[str, Any]:
    tier = case["tier"]
    return {
        "event_id": f"c{case['id']}",
        "ts": TS,
        "tenant": "peer",
        "route": f"/case/{case['id']}",
        "feature": "parity",
        "model": case["model"],
        "provider": case["book_provider"],
        "node_id": "peer",
        "request_id": f"c{case['id']}",
        "attempt": 1,
        "input_tokens": case["prompt"],
        "output_tokens": case["completion"],
        "cache_read_tokens": case["read"],
        "cache_write_tokens": case["write_5m"] + case["write_1h"],
        "cache_write_1h_tokens": case["write_1h"],
        "reasoning_tokens": case["reasoning"],
        "batch": tier == "batch",
        "status": "ok",
        "service_tier": tier,
        **({"region": case["region"]} if case["region"] else {}),
    }


def explain(case: dict[str, Any], theirs: dict[str, str]) -> str | None:
    """LiteLLM's own inconsistency behind a difference, if it is one."""
    if "error" in theirs:
        return f"LiteLLM raised ({theirs['error'].split(':')[0]})"
    priced_as = theirs.get("priced_as", "")
    if not case["region"] and priced_as and priced_as.lower() != case["key"].lower():
        return "LiteLLM prices this name from another entry of its map"
    if case["tier"] == "batch" and case["region"]:
        return "LiteLLM's batch cost calculator ignores the region"
    if case["tier"] == "batch" and float(theirs["cost"]) == 0:
        return "LiteLLM's batch cost calculator finds no rate (costs 0)"
    if case["key"].startswith("together-ai-"):
        return "completion_cost re-maps together-ai size buckets"
    return None


def test_every_chat_model_costs_what_litellm_charges(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    python = litellm_python()
    price_map = bundled_map(python)
    text = price_map.read_text()
    doc = resolve_aliases(json.loads(text))
    imported = parse_litellm(text, datetime(2025, 1, 1, tzinfo=UTC))
    chat = {k for k, v in doc.items() if isinstance(v, dict) and v.get("mode") == "chat"}
    all_cases = cases(doc, imported.entries)
    theirs = litellm_costs(python, all_cases)

    env.finops("prices", "import-litellm", str(price_map), "--effective-from", EFFECTIVE)
    events = tmp_path / "cases.jsonl"
    events.write_text("".join(json.dumps(event(c)) + "\n" for c in all_cases))
    env.finops("replay", str(events), timeout=900)
    env.finops("worker", "--drain", timeout=900)
    ours = {
        str(route): Decimal(str(cost))
        for route, cost in env.query("SELECT route, cost_usd FROM spend_window")
    }
    assert not env.query("SELECT count(*) FROM dead_letter WHERE topic NOT LIKE '%%cache%%'")[0][0]

    differs: dict[str, str] = {}
    batch_only: set[str] = set(c["key"] for c in all_cases)  # differ in batch cases only
    unexplained = []
    for case in all_cases:
        got, peer = ours[f"/case/{case['id']}"], theirs[case["id"]]
        expected = Decimal(peer["cost"]) if "cost" in peer else None
        if expected is not None and abs(got - expected) <= TOLERANCE * abs(expected) + Decimal(
            "1e-18"
        ):
            continue
        why = explain(case, peer)
        if case["tier"] != "batch":
            batch_only.discard(case["key"])
        if why is None:
            unexplained.append((case, str(got), peer))
        differs.setdefault(case["key"], why or "unexplained")
    matched = {c["key"] for c in all_cases} - set(differs)
    unbatched = matched | (set(differs) & batch_only)
    skipped = {k: v for k, v in imported.skipped.items() if k in chat}
    reasons = Counter(differs.values()) + Counter(
        "not imported: " + ("float noise past 6 decimal places" if "decimal" in v else v)
        for v in skipped.values()
    )
    with capsys.disabled():
        print(
            f"\nLiteLLM parity: {len(matched)} of {len(chat)} chat models equal LiteLLM"
            f" in all of {len(all_cases)} cases to 1e-12 ({len(unbatched)} in every case"
            f" but batch); {len(differs)} differ, {len(skipped)} not imported:"
        )
        for why, n in reasons.most_common():
            print(f"  {n:5d}  {why}")
    assert not unexplained, "\n".join(f"{c} ours={o} theirs={t}" for c, o, t in unexplained[:10])
    # The map is not a handful of models: most of it is matched.
    assert len(unbatched) > 0.9 * len(chat)
