"""Alert notifications to a Slack-compatible webhook.

The stream never waits for the webhook: transitions are offered to a bounded
queue (a full queue drops the message, logged and counted: the ``alert``
table and the ``alerts`` topic still hold it), and a background task posts
them one by one, retrying a failed post with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

ICONS = {"page": ":rotating_light:", "ticket": ":warning:", "info": ":information_source:"}


def slack_payload(message: Mapping[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook JSON for one alert transition (the body of an
    ``alerts`` topic message)."""
    key = message["dedup_key"]
    if message["event"] == "resolve":
        return {"text": f":white_check_mark: resolved: {key}"}
    lines = [
        f"{ICONS.get(message.get('severity', ''), '')} [{message.get('severity')}] "
        f"{message.get('summary')}",
        f"rule {message.get('rule')}: {message.get('value')} against {message.get('threshold')}",
        *(f"• {what}: {much}" for what, much in message.get("contributors", [])),
        f"key {key}",
    ]
    return {"text": "\n".join(lines)}


class Webhook:
    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        first_backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.first_backoff_s = first_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(queue_size)
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def offer(self, message: Mapping[str, Any]) -> bool:
        """Queue a transition without waiting; False if it had to be dropped."""
        try:
            self.queue.put_nowait(slack_payload(message))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("fault webhook_dropped: queue full, %s not sent", message["dedup_key"])
            return False
        return True

    async def post(self, payload: Mapping[str, Any]) -> int:
        """One POST; the HTTP status (0 when the server could not be reached)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.post(self.url, json=payload) as response,
            ):
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("webhook: %s", exc)
            return 0

    async def deliver(self, payload: Mapping[str, Any]) -> bool:
        """POST with retries and exponential backoff; True once a 2xx came back."""
        delay = self.first_backoff_s
        for attempt in range(1, self.attempts + 1):
            status = await self.post(payload)
            if 200 <= status < 300:
                self.sent += 1
                return True
            if attempt < self.attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.warning("fault webhook_failed: gave up after %d attempts", self.attempts)
        return False

    async def run(self) -> None:
        """Deliver queued notifications forever; never raises."""
        while True:
            payload = await self.queue.get()
            try:
                await self.deliver(payload)
            except Exception:  # a bug here must not take the worker down
                log.exception("fault webhook_failed")
            finally:
                self.queue.task_done()

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until everything queued was delivered
        or given up on: a draining worker notifies before it exits."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout_s)
