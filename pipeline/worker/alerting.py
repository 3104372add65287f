"""The rules in the worker: evaluated on a timer (and at the end of a
drain), their transitions published to the ``alerts`` topic and offered to
the webhook. The rules must never stop the stream: a failed evaluation is a
fault, retried on the next tick from the same watermark."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine

from pipeline.alerts.evaluator import evaluate
from pipeline.alerts.webhook import Webhook
from pipeline.settings import Settings
from pipeline.worker.metrics import ALERT_EVALUATIONS

log = logging.getLogger(__name__)


class RuleRunner:
    def __init__(self, settings: Settings, engine: Engine, alerts_topic: Any) -> None:
        self._engine = engine
        self._topic = alerts_topic
        self._lateness = timedelta(seconds=settings.alert_lateness_s)
        self._cooldown = timedelta(seconds=settings.alert_cooldown_s)
        self._max_age = timedelta(seconds=settings.alert_max_age_s)
        url = settings.alert_webhook_url
        self.webhook = Webhook(url) if url else None

    async def evaluate(self, limit: int, *, wait: bool = False) -> None:
        """Up to ``limit`` newly closed minutes; ``wait``: after an evaluation
        another worker has under way, rather than skip (see ``evaluate``)."""
        try:
            published = await asyncio.to_thread(
                evaluate,
                self._engine,
                lateness=self._lateness,
                cooldown=self._cooldown,
                limit=limit,
                max_age=self._max_age,
                wait=wait,
            )
        except Exception:
            log.exception("fault alert_evaluation")
            return
        ALERT_EVALUATIONS.inc()
        for message in published:
            await self._topic.send(key=message.key, value=message.value)
            body = json.loads(message.value)
            if self.webhook is not None and body["notify"]:
                self.webhook.offer(body)

    async def flush(self) -> None:
        """Notify everything queued before the process exits."""
        if self.webhook is not None:
            await self.webhook.flush(timeout_s=60)
