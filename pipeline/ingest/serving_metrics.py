"""Serving nodes' prefix-cache counters (vLLM, SGLang) to cache events. Pure.

Both engines count tokens, per served model:

- vLLM: ``vllm:prefix_cache_queries`` (prompt tokens looked up) and
  ``vllm:prefix_cache_hits`` (of those, found in the cache), per
  ``model_name`` and ``engine``;
- SGLang: ``sglang:prompt_tokens_total`` (prompt tokens) and
  ``sglang:cached_tokens_total`` (of those, served from the cache; per
  ``cache_source``, of which ``total`` is the sum when present).

A counter is cumulative, so a scrape says nothing by itself: the events
are the growth since the previous scrape of the same series (every label
set is a series of its own: an engine, a pod; :class:`CounterDeltas`). The
first scrape is the baseline; a series that appears later (a model loaded)
grew from zero; a value below the previous one means the engine restarted
and counts from zero. The counters have no tenant or route: their events are filed under
tenant :data:`NO_TENANT` and route ``node:<node>``, and since they count
tokens, each token is one lookup (``count`` = tokens), so the request- and
token-weighted hit rates of these windows are the same ratio.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from models.contracts import MAX_COUNT, CacheEvent

NO_TENANT: Final = "unattributed"
VLLM_QUERIES: Final = "vllm:prefix_cache_queries_total"
VLLM_HITS: Final = "vllm:prefix_cache_hits_total"
SGLANG_PROMPT: Final = "sglang:prompt_tokens_total"
SGLANG_CACHED: Final = "sglang:cached_tokens_total"
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]  # metric, model, labels


@dataclass(frozen=True)
class Growth:
    model: str
    looked_up: int  # prompt tokens looked up in the cache since the last scrape
    hits: int  # of those, found


def counters(text: str) -> dict[SeriesKey, int]:
    """Every prefix-cache counter series of a scrape, by metric, model and labels."""
    out: dict[SeriesKey, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (VLLM_QUERIES, VLLM_HITS, SGLANG_PROMPT, SGLANG_CACHED):
                continue
            model = sample.labels.get("model_name", "")
            if not model or sample.value != sample.value or sample.value < 0:  # NaN, negative
                continue
            # Every label names the series (a pod, an instance, an engine).
            labels = tuple(sorted(sample.labels.items()))
            out[(sample.name, model, labels)] = int(sample.value)
    return out


def _sglang_total_only(series: dict[SeriesKey, int]) -> dict[SeriesKey, int]:
    """SGLang's cached tokens per ``cache_source``: its ``total`` when there is one."""
    with_total = {
        (model, tuple(kv for kv in labels if kv[0] != "cache_source"))
        for metric, model, labels in series
        if metric == SGLANG_CACHED and ("cache_source", "total") in labels
    }
    return {
        key: v
        for key, v in series.items()
        if not (
            key[0] == SGLANG_CACHED
            and (key[1], tuple(kv for kv in key[2] if kv[0] != "cache_source")) in with_total
            and ("cache_source", "total") not in key[2]
        )
    }


class CounterDeltas:
    """The growth of every series between scrapes, resets handled."""

    def __init__(self) -> None:
        self._last: dict[SeriesKey, int] = {}
        self._scraped = False

    def growth(self, text: str) -> list[Growth]:
        now = _sglang_total_only(counters(text))
        looked: defaultdict[str, int] = defaultdict(int)
        hits: defaultdict[str, int] = defaultdict(int)
        for key, value in now.items():
            before = self._last.get(key)
            self._last[key] = value
            if before is None and not self._scraped:
                continue  # the baseline
            # A series born after the first scrape (a model loaded) grew from
            # zero; one below its last value restarted from zero.
            grew = value if before is None or value < before else value - before
            metric, model, _ = key
            if metric in (VLLM_QUERIES, SGLANG_PROMPT):
                looked[model] += grew
            else:
                hits[model] += grew
        self._scraped = True
        return [
            Growth(model, looked[model], min(hits[model], looked[model]))
            for model in sorted(set(looked) | set(hits))
        ]


def cache_events(growth: list[Growth], node: str, provider: str, ts: datetime) -> list[CacheEvent]:
    """Hit and miss events of one scrape's growth (none for a zero growth)."""
    out: list[CacheEvent] = []
    for g in growth:
        for op, tokens in (("hit", g.hits), ("miss", g.looked_up - g.hits)):
            # A counter line stands for at most MAX_COUNT lookups: split beyond.
            while tokens > 0:
                n = min(tokens, MAX_COUNT)
                out.append(
                    CacheEvent(
                        node_id=node,
                        ts=ts,
                        tenant=NO_TENANT,
                        route=f"node:{node}",
                        layer="prefix",
                        op=op,
                        tokens=n,
                        model=g.model,
                        provider=provider,
                        count=n,
                    )
                )
                tokens -= n
    return out
