"""``FinopsLogger``: a LiteLLM ``CustomLogger`` that publishes every call
straight to the usage topic, for proxies that prefer a Python callback to
the ``generic_api`` HTTP one.

Install llm-finops in the proxy's environment and name the instance in the
proxy's config::

    litellm_settings:
      callbacks: pipeline.ingest.litellm.finops_logger

It reads LiteLLM's ``standard_logging_object`` of each success and failure
and maps it exactly as ``POST /v1/litellm`` does (the mapping file's
``litellm`` section, ``FINOPS_INGEST_MAPPING``), then publishes through
:class:`pipeline.ingest.client.UsagePublisher` to ``FINOPS_KAFKA_URL``
(topic ``FINOPS_USAGE_TOPIC``). A payload the mapping cannot turn into an
event is published as what was read of it, so the worker dead-letters it
with the contract's reason. Publishing waits (in a thread, never on the
proxy's event loop) while the publisher is full; a call that still finds no
room is counted in ``dropped`` and logged as an error.
This module imports LiteLLM: load it only in a LiteLLM process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from pipeline.ingest import mapping
from pipeline.ingest.attempts import Attempts
from pipeline.ingest.client import BufferFull, UsagePublisher
from pipeline.ingest.litellm_payload import map_payloads

log = logging.getLogger(__name__)


class FinopsLogger(CustomLogger):  # type: ignore[misc]
    def __init__(
        self,
        kafka_url: str | None = None,
        topic: str | None = None,
        mapping_file: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        url = kafka_url or os.environ.get("FINOPS_KAFKA_URL")
        if not url:
            raise RuntimeError("FinopsLogger needs FINOPS_KAFKA_URL (or kafka_url=)")
        path = mapping_file or os.environ.get("FINOPS_INGEST_MAPPING")
        self._door = mapping.load(Path(path) if path else None).litellm
        self._attempts = Attempts()
        self._lock = threading.Lock()
        self.dropped = 0  # calls lost because the publisher was full (logged)
        compression = os.environ.get("FINOPS_COMPRESSION", "lz4")
        self.publisher = UsagePublisher(
            url,
            topic or os.environ.get("FINOPS_USAGE_TOPIC", "usage"),
            compression=None if compression == "none" else compression,
        )

    def _log(self, kwargs: dict[str, Any]) -> None:
        payload = kwargs.get("standard_logging_object")
        if payload is None:
            log.warning("FinopsLogger: a call without a standard_logging_object was not counted")
            return
        with self._lock:  # the attempt numbering is not shared between threads
            mapped = map_payloads([payload], self._door, self._attempts)
        try:
            for line in mapped.lines:
                self.publisher.publish_line(line)
            for refused in mapped.refused:
                log.warning("FinopsLogger: %s", refused.reason)
                self.publisher.publish_line(refused.evidence)
        except BufferFull:
            self.dropped += 1
            log.error("FinopsLogger: the broker is behind; a call was not counted (%d so far)",
                      self.dropped)  # fmt: skip

    def log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._log(kwargs)

    def log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._log(kwargs)

    # In a thread: a publisher waiting for room (the broker away) must hold
    # up this callback, never the proxy's event loop.
    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await asyncio.to_thread(self._log, kwargs)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await asyncio.to_thread(self._log, kwargs)


def __getattr__(name: str) -> Any:
    """``finops_logger``, the instance a proxy config names, made on first use
    (from the environment), so importing this module starts nothing."""
    if name == "finops_logger":
        instance = globals().get("_instance")
        if instance is None:
            instance = globals()["_instance"] = FinopsLogger()
        return instance
    raise AttributeError(name)
