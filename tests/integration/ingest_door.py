"""A running ``finops ingest serve`` for a test, with its keys."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from pipeline.embedded.runtime import free_port
from tests.integration.conftest import Env
from tests.waiting import wait_ready


@dataclass(frozen=True)
class Door:
    url: str
    any_key: str  # publishes any tenant
    acme_key: str  # bound to tenant acme
    pid: int  # the server's process

    def post(self, path: str, body: bytes, content_type: str, key: str | None = None,
             **headers: str) -> httpx.Response:  # fmt: skip
        # key "": no Authorization header at all
        auth = {"Authorization": f"Bearer {key or self.any_key}"} if key != "" else {}
        return httpx.post(
            self.url + path,
            content=body,
            headers={"Content-Type": content_type, **auth, **headers},
            timeout=60,
        )


def key(env: Env, *args: str) -> str:
    return env.finops("ingest", "keys", "create", *args).stdout.strip().splitlines()[-1]


@contextmanager
def running_door(env: Env, **settings: str) -> Iterator[Door]:
    any_key = key(env, "--source", "tests")
    acme_key = key(env, "--source", "acme-gateway", "--tenant", "acme")
    port = free_port()
    log = env.home / "ingest.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "ingest", "serve", "--port", str(port)],
            env={**env.vars, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/readyz", server, log, "finops ingest serve", 60)
        yield Door(url, any_key, acme_key, server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        output = log.read_text()
        assert code in (0, -signal.SIGTERM), f"exited {code}:\n{output[-3000:]}"
        assert "Application shutdown complete" in output, output[-3000:]
