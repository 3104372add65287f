"""Attempt numbers for producers that do not count them. Pure.

LiteLLM logs each retry and fallback of one request as its own call, all
sharing the request's ``trace_id``; an OpenTelemetry trace holds one span
per model call. Their attempts are numbered here in the order the door
first saw them (a request's items sorted by start time within one body),
and a call seen again (a client's retry of the same POST) keeps its number.
Requests are kept apart per tenant, so one producer cannot disturb
another's numbering by reusing its trace id. Memory is bounded: at most
``max_calls`` calls are remembered (the least recently used requests are
forgotten first), and a request stops numbering at the contract's largest
attempt (a call beyond it is refused by the contract). Numbering holds
within the window a request's attempts arrive in, which for retries is
seconds.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final

MAX_CALLS: Final = 200_000
MAX_ATTEMPT: Final = 10_000  # the contract's bound on attempt


class Attempts:
    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self._max = max_calls
        self._calls = 0
        self._seen: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()

    def number(self, tenant: str, request_id: str, call_id: str) -> int:
        key = (tenant, request_id)
        calls = self._seen.get(key)
        if calls is None:
            calls = self._seen[key] = {}
        else:
            self._seen.move_to_end(key)
        if call_id in calls:
            return calls[call_id]
        if len(calls) >= MAX_ATTEMPT:
            return MAX_ATTEMPT + 1
        calls[call_id] = len(calls) + 1
        self._calls += 1
        while self._calls > self._max and len(self._seen) > 1:
            _, forgotten = self._seen.popitem(last=False)
            self._calls -= len(forgotten)
        return calls[call_id]

    def assign(self, fields: dict[str, Any]) -> None:
        """Number an event's fields in place, by its tenant, request and
        event id (left unnumbered when it lacks either id: the contract then
        refuses it)."""
        request, call = fields.get("request_id"), fields.get("event_id")
        if request is not None and call is not None:
            fields["attempt"] = self.number(str(fields.get("tenant")), request, call)
