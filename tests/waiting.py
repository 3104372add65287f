"""Waiting for a server a test started to answer."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str,
               timeout_s: float) -> None:  # fmt: skip
    """Until ``url`` answers 200; fails with the server's log if it exits or
    does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready in {timeout_s:g} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
