"""The real LiteLLM proxy, pinned, in a venv of its own: started on a free
port with a config the test writes (models answering with ``mock_response``,
no database, no network), driven by the OpenAI Python SDK
(litellm_calls.py), and LiteLLM in-process with FinopsLogger
(litellm_logger.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from tests.peers.venvs import peer_python
from tests.waiting import wait_ready

# The proxy's dependencies are named one by one: litellm's [proxy] extra pins
# litellm-proxy-extras and litellm-enterprise releases the registry lacks.
PACKAGES: Final = [
    "litellm==1.108.14", "openai==3.60.0", "fastapi==0.165.0", "starlette==1.10.0",
    "uvicorn==0.55.0", "backoff==2.2.1", "orjson==3.13.0", "APScheduler==3.11.3",
    "PyJWT==2.15.1", "python-multipart==0.0.34", "cryptography==50.0.2", "websockets==15.0.1",
    "redis==8.2.0", "mcp==2.3.0", "Expression==5.8.0", "fastapi-sso==0.23.0",
    "soundfile==0.14.0", "uvloop==0.23.0", "aiokafka==0.14.0",
]  # fmt: skip
HERE: Final = Path(__file__).parent
CONSTRAINTS: Final = HERE / "litellm-proxy-constraints.txt"
REPO: Final = HERE.parent.parent
# No price-map download, and the generic_api callback posts every event at once.
QUIET: Final = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DEFAULT_BATCH_SIZE": "1",
    "DEFAULT_FLUSH_INTERVAL_SECONDS": "1",
}


def proxy_python() -> Path:
    return peer_python("litellm-proxy-1.108.14", PACKAGES, CONSTRAINTS)


def peer_env(**extra: str) -> dict[str, str]:
    """The peer's environment: ours stripped of our settings, the repository
    importable (for FinopsLogger), LiteLLM kept offline."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FINOPS_", "PYTHON"))}
    return {**base, **QUIET, "PYTHONPATH": str(REPO), **extra}


@contextmanager
def running_proxy(config: Path, port: int, log: Path, **extra: str) -> Iterator[tuple[str, str]]:
    """The proxy's URL and master key, while it runs."""
    python = proxy_python()
    master = "sk-test-" + os.urandom(12).hex()
    with log.open("w") as out:
        proxy = subprocess.Popen(
            [str(python.parent / "litellm"), "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            env=peer_env(LITELLM_MASTER_KEY=master, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health/liveliness", proxy, log, "the LiteLLM proxy", 120)
        yield url, master
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(timeout=30)


def run_peer(script: str, job: dict[str, Any], **extra: str) -> list[dict[str, Any]]:
    """Run one of the peer scripts with a JSON job; its JSON lines."""
    out = subprocess.run(
        [str(proxy_python()), str(HERE / script)],
        input=json.dumps(job),
        env=peer_env(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
