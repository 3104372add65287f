"""Run in the LiteLLM proxy peer's venv: send a job's calls through the proxy
with the OpenAI Python SDK and print, per call, what the client saw: its
usage, LiteLLM's call id and cost (response headers), or its error status.

A job: {"base_url", "key", "calls": [{"model", "user", "tags"}]}."""

from __future__ import annotations

import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    job = json.loads(sys.stdin.read())
    client = OpenAI(base_url=job["base_url"], api_key=job["key"], max_retries=0)
    for call in job["calls"]:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=call["model"],
                messages=[{"role": "user", "content": "PROMPT-TEXT-never-stored"}],
                user=call["user"],
                extra_body={"metadata": {"tags": call["tags"]}},
            )
        except openai.APIStatusError as exc:
            print(json.dumps({**call, "ok": False, "status": exc.status_code}), flush=True)
            continue
        response = raw.parse()
        print(json.dumps({
            **call, "ok": True, "usage": response.usage.model_dump(),
            "call_id": raw.headers.get("x-litellm-call-id"),
            "cost": raw.headers.get("x-litellm-response-cost"),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
