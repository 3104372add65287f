"""LiteLLM's own cost of each case on standard input, run in the pinned
LiteLLM's venv (tests/peers/litellm_venv.py), with no network: one JSON
object per line in, one per line out, ``cost`` as ``repr`` of LiteLLM's
float and ``priced_as`` the map entry LiteLLM priced it from.

A case: ``model``, ``provider`` (LiteLLM's custom_llm_provider), ``region``
or null, ``tier`` (standard, priority, flex or batch), and the usage:
``prompt`` (every prompt token), ``read``, ``write_5m``, ``write_1h``,
``completion`` (every completion token) and ``reasoning``.

This file imports nothing of this project: it runs beside it, not in it.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm
from litellm import ModelResponse, Usage
from litellm._internal_context import pinned_billing_time
from litellm.cost_calculator import batch_cost_calculator
from litellm.types.utils import (
    CacheCreationTokenDetails,
    CompletionTokensDetailsWrapper,
    PromptTokensDetailsWrapper,
)

# Outside every off-peak window of the map (the pipeline prices peak rates).
BILLING_TIME = datetime(2025, 1, 8, 2, 30, tzinfo=UTC)


def usage(case: dict) -> Usage:
    writes = case["write_5m"] + case["write_1h"]
    details = PromptTokensDetailsWrapper(
        cached_tokens=case["read"] or None,
        cache_creation_tokens=writes or None,
        cache_creation_token_details=CacheCreationTokenDetails(
            ephemeral_5m_input_tokens=case["write_5m"], ephemeral_1h_input_tokens=case["write_1h"]
        )
        if writes
        else None,
    )
    return Usage(
        prompt_tokens=case["prompt"],
        completion_tokens=case["completion"],
        total_tokens=case["prompt"] + case["completion"],
        prompt_tokens_details=details,
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=case["reasoning"])
        if case["reasoning"]
        else None,
    )


def cost(case: dict) -> tuple[float, str]:
    u = usage(case)
    model, provider = case["model"], case["provider"]
    try:
        info = litellm.get_model_info(model=model, custom_llm_provider=provider)
        priced_as = str(info.get("key"))
    except Exception:  # an unknown name: LiteLLM prices it 0 or raises
        priced_as = ""
    if case["tier"] == "batch":
        prompt, completion = batch_cost_calculator(
            usage=u, model=model, custom_llm_provider=provider
        )
        return prompt + completion, priced_as
    tier = None if case["tier"] == "standard" else case["tier"]
    extra = {"region_name": case["region"]} if case["region"] else {}
    total = litellm.completion_cost(
        completion_response=ModelResponse(model=model, usage=u),
        model=model,
        custom_llm_provider=provider,
        service_tier=tier,
        **extra,
    )
    return total, priced_as


def main() -> None:
    with pinned_billing_time(BILLING_TIME):
        for line in sys.stdin:
            case = json.loads(line)
            try:
                value, priced_as = cost(case)
                out = {"id": case["id"], "cost": repr(float(value)), "priced_as": priced_as}
            except Exception as exc:
                out = {"id": case["id"], "error": f"{type(exc).__name__}: {exc}"[:300]}
            sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
