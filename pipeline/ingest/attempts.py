"""Attempt numbers for producers that do not count them. Pure.

LiteLLM logs each retry and fallback of one request as its own call, all
sharing the request's ``trace_id``; an OpenTelemetry trace holds one span
per model call. Their attempts are numbered here in the order the door
first saw them (a request's items sorted by start time within one body),
and a call seen again (a client's retry of the same POST) keeps its number.
The memory is bounded (least recently used requests are forgotten first),
so numbering holds within the window a request's attempts arrive in, which
for retries is seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

MAX_REQUESTS: Final = 100_000


class Attempts:
    def __init__(self, max_requests: int = MAX_REQUESTS) -> None:
        self._max = max_requests
        self._seen: OrderedDict[str, dict[str, int]] = OrderedDict()

    def number(self, request_id: str, call_id: str) -> int:
        calls = self._seen.get(request_id)
        if calls is None:
            calls = self._seen[request_id] = {}
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(request_id)
        if call_id not in calls:
            calls[call_id] = len(calls) + 1
        return calls[call_id]
