"""LiteLLM's price map (``model_prices_and_context_window.json``) as price
book entries, rate for rate what LiteLLM's own chat cost would charge.

LiteLLM computes a chat call's cost from the map at call time, resolving
each rate through fallbacks (a missing cache-read rate is the input rate, a
missing 1h write rate the 5-minute one, a tier's missing rate the standard
one, ...) and switching rates when the prompt crosses a threshold key
(``input_cost_per_token_above_200k_tokens``). Those rates are piecewise
constant in the prompt size, so this module resolves them once per piece,
at import, into explicit entries: one per (model, provider, region, service
tier, prompt-size tier). :func:`rates` is that resolution, read from
LiteLLM's ``litellm_core_utils/llm_cost_calc/utils.py``
(``_get_token_base_cost``, ``get_cost_per_unit``,
``_resolve_reasoning_token_cost``), ``tiered_pricing.py`` and the provider
routes of ``cost_calculator.py`` (as of litellm 1.108.14).

What is read: per-token input, output, cache read, cache write (5m) and 1h
write rates, reasoning rates; ``*_above_<N>[k]_tokens`` thresholds alone and
combined with ``_priority``/``_flex`` and ``_above_1hr``; ``_priority`` and
``_flex`` tiers; ``_batches`` rates (the batch tier, as LiteLLM's batch cost
calculator reads them); ``tiered_pricing`` ranges; ``alias_of`` and
``aliases``; Bedrock's ``bedrock/<region>/<model>`` keys as regional prices.
Every entry that cannot be priced so is returned with its reason.

Prices are JSON numbers per token; they are parsed as ``Decimal`` from the
text (never as floats) and scaled to per-Mtok.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pydantic import ValidationError

from models.prices import PriceEntry

Spec = Mapping[str, Any]

# Providers whose cost route never reads the service tier (cost_calculator.py).
NO_TIERS: Final = frozenset(
    {
        "deepseek",
        "tencent",
        "fireworks_ai",
        "xai",
        "perplexity",
        "lemonade",
        *("dashscope", "qwencloud", "qwen_ai_platform"),
    }
)
DASHSCOPE: Final = frozenset({"dashscope", "qwencloud", "qwen_ai_platform"})
# Providers that switch at the threshold itself (>=); every other one above it.
INCLUSIVE: Final = frozenset({"xai"})
TIERS: Final = {"priority": "priority", "flex": "flex"}
_TIER_SUFFIXES: Final = ("_ultrafast", "_balanced", "_priority", "_auto", "_fast", "_flex")
_NOT_STANDARD: Final = (*_TIER_SUFFIXES, "_batches")
_PREFIXES: Final = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
# Keys LiteLLM's get_model_info never hands to the cost code.
_INVISIBLE: Final = (
    "input_cost_per_token_cache_hit",
    "explicit_cache_read_input_token_cost",
    "input_cost_per_request",
    "input_dbu_cost_per_token",
    "output_dbu_cost_per_token",
)
_BEDROCK_REGION: Final = re.compile(r"^bedrock/([a-z]{2}(?:-gov)?-[a-z]+-\d)/(.+)$")
ZERO: Final = Decimal(0)
HALF: Final = Decimal("0.5")


@dataclass(frozen=True)
class LiteLLMImport:
    entries: list[PriceEntry]
    skipped: dict[str, str]  # map key -> why it has no entry
    notes: dict[str, str] = field(default_factory=dict)  # map key -> what was left out of it


def _num(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, Decimal | str):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _get(spec: Spec, key: str, default: Decimal | None) -> Decimal | None:
    """``get_cost_per_unit``: the key, else the key with its first tier suffix
    taken out, else ``default``."""
    value = _num(spec.get(key))
    if value is not None:
        return value
    if spec.get(key) is None:
        for suffix in _TIER_SUFFIXES:
            if suffix in key:
                base = _num(spec.get(key.replace(suffix, "")))
                if base is not None:
                    return base
                break
    return default


def _threshold(key: str) -> tuple[int, str]:
    text = key.rsplit("_above_", 1)[1].split("_tokens")[0]
    return int(Decimal(text.replace("k", "")) * (1000 if "k" in text else 1)), text


def thresholds(spec: Spec, suffix: str) -> list[tuple[int, str]]:
    """The prompt sizes at which the rates of the ``suffix`` tier switch."""
    keys = [
        k
        for k, v in spec.items()
        if v is not None
        and k.startswith(tuple(f"{p}_above_" for p in _PREFIXES))
        and "_tokens" in k
        and (not k.endswith(_NOT_STANDARD) or (suffix and k.endswith(suffix)))
    ]
    return sorted({_threshold(k) for k in keys})


@dataclass(frozen=True)
class Rates:
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal


def rates(spec: Spec, suffix: str, prompt_tokens: int, provider: str) -> Rates:
    """The rates LiteLLM's generic chat cost applies to a prompt of
    ``prompt_tokens`` at the tier of ``suffix`` ("" for standard)."""
    tier = (lambda k: f"{k}{suffix}") if suffix else (lambda k: k)
    inp = _get(spec, tier("input_cost_per_token"), ZERO) or ZERO
    out = _get(spec, tier("output_cost_per_token"), ZERO) or ZERO
    write = _get(spec, tier("cache_creation_input_token_cost"), None)
    one_hour = _get(spec, "cache_creation_input_token_cost_above_1hr", None)  # never per tier
    read = _get(spec, tier("cache_read_input_token_cost"), None)
    inclusive = provider in INCLUSIVE
    for n, text in thresholds(spec, suffix):
        if prompt_tokens > n or (inclusive and prompt_tokens == n):
            inp = _get(spec, tier(f"input_cost_per_token_above_{text}_tokens"), inp) or ZERO
            out = _get(spec, tier(f"output_cost_per_token_above_{text}_tokens"), out) or ZERO
            write = _get(spec, tier(f"cache_creation_input_token_cost_above_{text}_tokens"), write)
            one_hour = _get(
                spec,
                tier(f"cache_creation_input_token_cost_above_1hr_above_{text}_tokens"),
                one_hour,
            )
            read = _get(spec, tier(f"cache_read_input_token_cost_above_{text}_tokens"), read)
    # A missing cache rate is the input rate in force (after the thresholds).
    read = inp if read is None else read
    write = inp if write is None else write
    one_hour = write if one_hour is None else one_hour
    # The reasoning rate is never switched by a threshold; a tier's output
    # rate wins over the flat reasoning rate.
    tier_reasoning = _get(spec, tier("output_cost_per_reasoning_token"), None)
    flat_reasoning = _num(spec.get("output_cost_per_reasoning_token"))
    if spec.get(tier("output_cost_per_reasoning_token")) is not None and tier_reasoning is not None:
        reasoning = tier_reasoning
    elif suffix and spec.get(tier("output_cost_per_token")) is not None:
        reasoning = out
    elif flat_reasoning is not None:
        reasoning = flat_reasoning
    else:
        reasoning = out
    if provider == "xai":  # its route drops the completion details: thinking is output
        reasoning = out
    return Rates(inp, out, read, write, one_hour, reasoning)


def _route_rates(spec: Spec, provider: str) -> Rates | None:
    """Providers with a formula of their own, as flat rates (None: generic)."""
    inp = _num(spec.get("input_cost_per_token")) or ZERO
    out = _num(spec.get("output_cost_per_token")) or ZERO
    reasoning = _num(spec.get("output_cost_per_reasoning_token"))
    if provider in DASHSCOPE:
        read = _num(spec.get("cache_read_input_token_cost"))
        write = _num(spec.get("cache_creation_input_token_cost"))
        read, write = (inp if read is None else read), (inp if write is None else write)
        return Rates(inp, out, read, write, write, out if reasoning is None else reasoning)
    if provider == "perplexity":  # no cache discount
        return Rates(inp, out, inp, inp, inp, out if reasoning is None else reasoning)
    return None


def _range_entries(spec: Spec) -> list[tuple[int, Rates]]:
    """``tiered_pricing``: a range [start, end] prices prompts with
    start < n <= end, every token at its rates; above every range, the last."""
    tiers = sorted(spec["tiered_pricing"], key=lambda t: _num(t["range"][0]) or ZERO)
    flat_out = _num(spec.get("output_cost_per_token"))
    out: list[tuple[int, Rates]] = []
    for i, t in enumerate(tiers):
        inp = _num(t["input_cost_per_token"])
        if inp is None:
            raise ValueError("a tiered_pricing range without an input price")
        output = _num(t.get("output_cost_per_token"))
        output = flat_out if output is None else output
        if output is None:
            raise ValueError("a tiered_pricing range without an output price")
        read = _num(t.get("cache_read_input_token_cost"))
        write = _num(t.get("cache_creation_input_token_cost"))
        write = inp if write is None else write
        one_hour = _num(t.get("cache_creation_input_token_cost_above_1hr"))
        reasoning = _num(t.get("output_cost_per_reasoning_token"))
        start = int(_num(t["range"][0]) or 0)
        out.append(
            (
                0 if i == 0 else start + 1,
                Rates(
                    inp,
                    output,
                    inp if read is None else read,
                    write,
                    write if one_hour is None else one_hour,
                    output if reasoning is None else reasoning,
                ),
            )
        )
    return out


def _batch_rates(spec: Spec, prompt_tokens: int, provider: str) -> Rates | None:
    """The batch tier, as LiteLLM's ``batch_cost_calculator`` prices a batch
    job when the map has a batch input rate: no 1h split, no reasoning rate,
    and half the standard output rate when the map has no batch output rate."""

    def rate(prefix: str) -> Decimal | None:
        flat = _num(spec.get(f"{prefix}_batches"))
        crossed = [
            text
            for n, text in thresholds(
                {k: v for k, v in spec.items() if k.startswith(prefix) and k.endswith("_batches")},
                "_batches",
            )
            if prompt_tokens > n or (provider in INCLUSIVE and prompt_tokens == n)
        ]
        if crossed:
            above = _num(spec.get(f"{prefix}_above_{crossed[-1]}_tokens_batches"))
            return flat if above is None else above
        return flat

    inp = rate("input_cost_per_token")
    out = rate("output_cost_per_token")
    flat_out = _num(spec.get("output_cost_per_token"))
    if out is None and flat_out is not None:
        out = flat_out / 2  # what LiteLLM's batch calculator assumes with no batch output rate
    if inp is None or out is None:
        return None
    read, write = rate("cache_read_input_token_cost"), rate("cache_creation_input_token_cost")
    read = inp if read is None else read
    write = inp if write is None else write
    return Rates(inp, out, read, write, write, out)


def _batch_thresholds(spec: Spec) -> list[int]:
    return sorted(
        {
            _threshold(k)[0]
            for k, v in spec.items()
            if v is not None and k.endswith("_tokens_batches") and "_above_" in k
        }
    )


def _pieces(provider: str, sizes: list[int]) -> list[int]:
    """Where each prompt-size tier starts: 0, then each threshold (inclusive
    providers) or the token after it."""
    step = 0 if provider in INCLUSIVE else 1
    return [0, *(n + step for n in sizes)]


def _entry(
    name: str,
    provider: str,
    region: str,
    tier: str,
    start: int,
    r: Rates,
    effective_from: datetime,
) -> PriceEntry:
    return PriceEntry(
        model=name,
        provider=provider,
        region=region,
        service_tier=tier,
        from_input_tokens=start,
        effective_from=effective_from,
        input_per_mtok=per_mtok(r.input),
        output_per_mtok=per_mtok(r.output),
        cache_read_per_mtok=per_mtok(r.cache_read),
        cache_write_per_mtok=per_mtok(r.cache_write),
        # Empty where they equal their fallback: the same cost, fewer rates.
        cache_write_1h_per_mtok=None
        if r.cache_write_1h == r.cache_write
        else per_mtok(r.cache_write_1h),
        reasoning_per_mtok=None if r.reasoning == r.output else per_mtok(r.reasoning),
    )


def _dedupe(rows: list[tuple[int, Rates]]) -> list[tuple[int, Rates]]:
    """Drop a tier whose rates equal the tier below it (a threshold some
    other tier's key introduced)."""
    kept: list[tuple[int, Rates]] = []
    for start, r in rows:
        if not kept or kept[-1][1] != r:
            kept.append((start, r))
    return kept


def entries_of(
    key: str, spec: Spec, effective_from: datetime
) -> tuple[list[PriceEntry], list[str]]:
    """The entries of one chat entry of the map, and what of it was left out."""
    provider = str(spec.get("litellm_provider") or "unknown")
    region = ""
    name = key
    found = _BEDROCK_REGION.match(key)
    if found and provider.startswith("bedrock"):
        region, name = found.group(1), found.group(2)
    notes = []
    if spec.get("off_peak_pricing"):
        notes.append("off_peak_pricing left out: priced at the peak rates")
    for multiplier in (
        "regional_endpoint_uplift_multiplier",
        "regional_processing_uplift_multiplier",
    ):
        if any(k.startswith(multiplier) for k in spec):
            notes.append(f"{multiplier} left out: it applies only when the caller names a location")
    if spec.get("provider_specific_entry"):
        notes.append("provider_specific_entry (geo and speed multipliers) left out")
    spec = {k: v for k, v in spec.items() if k not in _INVISIBLE and not k.endswith("_decisions")}
    if provider == "fireworks_ai" and spec.get("cache_read_input_token_cost") is None:
        inp = _num(spec.get("input_cost_per_token"))
        if inp is not None:
            spec = {**spec, "cache_read_input_token_cost": inp * Decimal("0.5")}
    rows: list[PriceEntry] = []

    def add(tier: str, pieces: list[tuple[int, Rates]]) -> None:
        rows.extend(
            _entry(name, provider, region, tier, s, r, effective_from) for s, r in _dedupe(pieces)
        )

    special = _route_rates(spec, provider)
    if isinstance(spec.get("tiered_pricing"), list) and spec["tiered_pricing"]:
        add("standard", _range_entries(spec))
    elif special is not None:
        add("standard", [(0, special)])
    else:
        sizes = [n for n, _ in thresholds(spec, "")]
        add("standard", [(s, rates(spec, "", s, provider)) for s in _pieces(provider, sizes)])
        for tier, suffix in TIERS.items() if provider not in NO_TIERS else ():
            if not any(k.endswith(f"_{suffix}") and v is not None for k, v in spec.items()):
                continue
            sizes = [n for n, _ in thresholds(spec, f"_{suffix}")]
            add(
                tier,
                [(s, rates(spec, f"_{suffix}", s, provider)) for s in _pieces(provider, sizes)],
            )
    if _num(spec.get("input_cost_per_token_batches")) is None:
        # LiteLLM's batch calculator charges half the standard rates when
        # the map has no batch input rate: the standard entries' discount.
        rows[:] = [
            e.model_copy(update={"batch_discount": HALF}) if e.service_tier == "standard" else e
            for e in rows
        ]
    else:
        pieces = [
            (s, r)
            for s in _pieces(provider, _batch_thresholds(spec))
            if (r := _batch_rates(spec, s, provider)) is not None
        ]
        if pieces:
            add("batch", pieces)
        else:
            notes.append("batch rates left out: no output rate")
    return rows, notes


def _priceable(spec: Spec) -> str | None:
    """Why a map entry is not a per-token chat price, or None if it is."""
    if spec.get("mode") not in (None, "chat", "completion", "responses"):
        return f"mode {spec.get('mode')}: not a chat model"
    if isinstance(spec.get("tiered_pricing"), list) and spec["tiered_pricing"]:
        return None
    if (
        _num(spec.get("input_cost_per_token")) is None
        or _num(spec.get("output_cost_per_token")) is None
    ):
        return "no per-token input and output price"
    if spec.get("litellm_provider") == "vertex_ai" and any(
        k.endswith("_above_128k_tokens") for k in spec
    ):
        return "vertex_ai's 128k route prices output by completion size: not a prompt tier"
    return None


def resolve_aliases(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The map with ``aliases`` lists expanded into keys of their own and
    every ``alias_of`` entry given its target's prices (its own keys win)."""
    out: dict[str, Any] = {}
    for name, spec in doc.items():
        if not isinstance(spec, Mapping):
            continue
        out[name] = dict(spec)
        for alias in spec.get("aliases") or []:
            if isinstance(alias, str):
                out.setdefault(alias, {k: v for k, v in spec.items() if k != "aliases"})
    for name, spec in list(out.items()):
        seen = {name}
        target = spec.get("alias_of")
        merged = dict(spec)
        while isinstance(target, str) and target in out and target not in seen:
            seen.add(target)
            merged = {**out[target], **merged}
            target = out[target].get("alias_of")
        merged.pop("alias_of", None)
        out[name] = merged
    return out


def parse_litellm(text: str, effective_from: datetime) -> LiteLLMImport:
    """Every chat model of the map as price entries from ``effective_from``."""
    doc: Mapping[str, Any] = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    entries: list[PriceEntry] = []
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name, spec in resolve_aliases(doc).items():
        if name == "sample_spec":
            continue
        why = _priceable(spec)
        if why:
            skipped[name] = why
            continue
        try:
            rows, left_out = entries_of(name, spec, effective_from)
        except (ValueError, InvalidOperation, TypeError, KeyError, ValidationError) as exc:
            skipped[name] = (
                str(exc).splitlines()[0]
                if not isinstance(exc, ValidationError)
                else _first_error(exc)
            )
            continue
        entries.extend(rows)
        if left_out:
            notes[name] = "; ".join(left_out)
    return LiteLLMImport(entries, skipped, notes)


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"


def per_mtok(per_token: Decimal) -> Decimal:
    """Per million tokens, without trailing zeros or an exponent (10, not 1E+1)."""
    value = (per_token * 1_000_000).normalize()
    exponent = value.as_tuple().exponent
    return value.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else value
