"""Run in the LiteLLM proxy peer's venv: LiteLLM in-process with
FinopsLogger as its callback, calls answered by ``mock_response`` (no
network); FinopsLogger publishes them to FINOPS_KAFKA_URL. Prints each
call's usage as LiteLLM saw it.

A job: {"calls": [{"model", "user", "tags", "mock"}]}: ``mock`` is a
response dict (with its usage) or an exception name ("litellm.RateLimitError")."""

from __future__ import annotations

import asyncio
import json
import sys

import litellm

from pipeline.ingest.litellm import FinopsLogger


async def main() -> None:
    job = json.loads(sys.stdin.read())
    logger = FinopsLogger()
    litellm.callbacks = [logger]
    for call in job["calls"]:
        try:
            r = await litellm.acompletion(
                model=call["model"],
                messages=[{"role": "user", "content": "PROMPT-TEXT-never-stored"}],
                user=call["user"],
                metadata={"tags": call["tags"]},
                mock_response=call["mock"],
                api_key="sk-not-used",
            )
            cost = r._hidden_params.get("response_cost")  # what LiteLLM charged
            print(json.dumps({**call, "ok": True, "usage": r.usage.model_dump(), "cost": cost}),
                  flush=True)  # fmt: skip
        except Exception as exc:
            print(json.dumps({**call, "ok": False, "error": type(exc).__name__}), flush=True)
    # LiteLLM runs its callbacks in the background: give them time, then flush.
    for _ in range(100):
        if logger.publisher.published + logger.publisher.failed >= len(job["calls"]):
            break
        await asyncio.sleep(0.1)
    await asyncio.to_thread(logger.publisher.close)
    print(json.dumps({"published": logger.publisher.published, "failed": logger.publisher.failed}))


if __name__ == "__main__":
    asyncio.run(main())
