"""A running ``finops serve`` (the pages and the JSON API) for a test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.embedded.runtime import free_port
from tests.integration.conftest import Env
from tests.waiting import wait_ready


@contextmanager
def running_pages(env: Env, log: Path, **settings: str) -> Iterator[str]:
    """The server's URL, with ``settings`` added to the test's environment."""
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
            env={**env.vars, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/healthz", server, log, "finops serve", 60)  # type: ignore[arg-type]
        yield url
    finally:
        server.terminate()
        server.wait(15)
