from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from models.contracts import MAX_COUNT
from pipeline.ingest.serving_metrics import (
    NO_TENANT,
    CounterDeltas,
    Growth,
    cache_events,
    counters,
)

DATA = Path(__file__).parents[2] / "data" / "ingest"
VLLM = (DATA / "vllm_metrics.prom").read_text()
SGLANG = (DATA / "sglang_metrics.prom").read_text()


def scaled(text: str, names: str, factor: float) -> str:
    return re.sub(
        rf"^((?:{names})\{{[^}}]*\}}) (\S+)$",
        lambda m: f"{m.group(1)} {float(m.group(2)) * factor}",
        text,
        flags=re.M,
    )


def test_vllm_growth_per_model_is_summed_over_engines_and_survives_a_restart() -> None:
    names = r"vllm:prefix_cache_(?:queries|hits)_total"
    first = counters(VLLM)
    per_model: dict[str, list[int]] = {}
    for (metric, model, _), v in first.items():
        per_model.setdefault(model, [0, 0])[metric.endswith("hits_total")] += v
    deltas = CounterDeltas()
    assert deltas.growth(VLLM) == []  # the baseline
    grown = deltas.growth(scaled(VLLM, names, 2))
    assert grown == [Growth(m, q, h) for m, (q, h) in sorted(per_model.items())]
    # The engine restarted: counters below the last scrape count from zero.
    restarted = deltas.growth(scaled(VLLM, names, 0.5))
    assert restarted == [Growth(m, q // 2, h // 2) for m, (q, h) in sorted(per_model.items())]


def test_sglang_cached_tokens_over_prompt_tokens_without_double_counting_sources() -> None:
    deltas = CounterDeltas()
    deltas.growth(SGLANG)
    names = r"sglang:(?:cached|prompt)_tokens_total"
    grown = {g.model: g for g in deltas.growth(scaled(SGLANG, names, 3))}
    first = counters(SGLANG)
    for model, g in grown.items():
        prompt = sum(v for (m, mod, _), v in first.items() if mod == model and "prompt" in m)
        cached = sum(v for (m, mod, _), v in first.items() if mod == model and "cached" in m)
        assert (g.looked_up, g.hits) == (2 * prompt, 2 * cached)


def test_growth_becomes_hit_and_miss_lines_a_token_a_lookup() -> None:
    ts = datetime(2025, 11, 1, tzinfo=UTC)
    evs = cache_events([Growth("m", 1000, 300), Growth("idle", 0, 0)], "n1", "self-hosted", ts)
    assert [(e.op, e.tokens, e.count, e.tenant, e.route) for e in evs] == [
        ("hit", 300, 300, NO_TENANT, "node:n1"),
        ("miss", 700, 700, NO_TENANT, "node:n1"),
    ]
    huge = cache_events([Growth("m", 2 * MAX_COUNT + 1, 0)], "n1", "self-hosted", ts)
    assert [e.tokens for e in huge] == [MAX_COUNT, MAX_COUNT, 1]


def test_every_label_set_is_a_series_and_a_model_loaded_later_counts_from_zero() -> None:
    def scrape(pods: dict[str, tuple[int, int]]) -> str:
        lines = [
            "# TYPE vllm:prefix_cache_queries counter",
            "# TYPE vllm:prefix_cache_hits counter",
        ]
        for pod, (q, h) in pods.items():
            model = "late" if pod == "p3" else "m"
            labels = f'model_name="{model}",pod="{pod}"'
            lines += [f"vllm:prefix_cache_queries_total{{{labels}}} {q}",
                      f"vllm:prefix_cache_hits_total{{{labels}}} {h}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    deltas = CounterDeltas()
    deltas.growth(scrape({"p1": (100, 10), "p2": (1000, 100)}))
    grown = deltas.growth(scrape({"p1": (110, 11), "p2": (1500, 150), "p3": (40, 4)}))
    # Both pods' growth, not the last one's; the new model's whole count.
    assert grown == [Growth("late", 40, 4), Growth("m", 510, 51)]
