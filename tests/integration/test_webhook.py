"""Alert notifications to a Slack-compatible webhook on a loopback server:
retried with backoff until accepted, given up on after the last attempt,
dropped (never waited for) when the queue is full; and the CLI's test."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from pipeline.alerts.webhook import Webhook, slack_payload
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration

FIRE = {
    "event": "fire",
    "dedup_key": "unpriced_model:mystery-9b/newco",
    "severity": "page",
    "rule": "unpriced_model",
    "summary": "12 attempts on mystery-9b (newco) have no price",
    "value": "12",
    "threshold": "0",
    "contributors": [["route /v1/complete", "12 attempts"]],
}


class Hook:
    """A loopback webhook that fails the first ``failures`` posts with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if len(hook.statuses) < hook.failures else 200
                hook.statuses.append(status)
                if status == 200:
                    hook.received.append(body)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(failures=2)
    yield h
    h.server.shutdown()
    h.server.server_close()


def test_a_failing_webhook_is_retried_with_backoff(hook: Hook) -> None:
    webhook = Webhook(hook.url, first_backoff_s=0.01)
    assert asyncio.run(webhook.deliver(slack_payload(FIRE))) is True
    assert hook.statuses == [500, 500, 200] and webhook.sent == 1
    text = hook.received[0]["text"]
    assert "[page] 12 attempts on mystery-9b" in text and "route /v1/complete" in text
    resolved = slack_payload({"event": "resolve", "dedup_key": FIRE["dedup_key"]})
    assert resolved == {"text": f":white_check_mark: resolved: {FIRE['dedup_key']}"}


def test_an_unreachable_webhook_is_given_up_and_a_full_queue_drops() -> None:
    async def run() -> Webhook:
        webhook = Webhook("http://127.0.0.1:9/nothing", attempts=3, first_backoff_s=0.01,
                          queue_size=1)  # fmt: skip
        assert webhook.offer(FIRE) is True
        assert webhook.offer(FIRE) is False  # full: dropped at once, never waited for
        task = asyncio.create_task(webhook.run())
        await webhook.flush(timeout_s=10)
        task.cancel()
        return webhook

    webhook = asyncio.run(run())
    assert (webhook.sent, webhook.failed, webhook.dropped) == (0, 1, 1)


def test_the_cli_test_posts_one_message(env: Env, hook: Hook) -> None:
    hook.failures = 0
    out = env.finops("alerts", "test-webhook", "--url", hook.url).stdout
    assert "answered 200" in out and "test notification" in hook.received[0]["text"]
    hook.failures = 99
    failed = env.finops("alerts", "test-webhook", "--url", hook.url, check=False)
    assert failed.returncode == 1 and "answered 500" in failed.stdout
