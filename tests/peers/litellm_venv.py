"""A venv of its own with the pinned LiteLLM, installed by the tests (once
per machine, under a cache directory), so LiteLLM's code never runs in the
project's interpreter and no unpinned release is ever installed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

LITELLM: Final = "litellm==1.108.14"
PEER_SCRIPT: Final = Path(__file__).with_name("litellm_cost.py")
# LiteLLM's own dependencies, pinned as well (some LiteLLM releases on PyPI
# were compromised; a floating dependency is the same risk one step away).
CONSTRAINTS: Final = Path(__file__).with_name("litellm-constraints.txt")


def _root() -> Path:
    return Path(os.environ.get("FINOPS_PEER_CACHE", Path.home() / ".cache" / "finops-peers"))


def litellm_python() -> Path:
    """The interpreter of the pinned LiteLLM's venv, created if missing."""
    root = _root() / f"{LITELLM.replace('==', '-')}-{_digest()}"
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        # Test processes in parallel share one install.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-c",
                    str(CONSTRAINTS),
                    LITELLM,
                ],
                check=True,
                timeout=900,
            )
            (root / "installed").write_text(LITELLM)
    return python


def _digest() -> str:
    """A short hash of the constraints: a venv per pinned set."""
    import hashlib

    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:8]


def bundled_map(python: Path) -> Path:
    """The price map the pinned LiteLLM ships (what it prices with offline)."""
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import os, litellm; print(os.path.join(os.path.dirname(litellm.__file__),"
            " 'model_prices_and_context_window_backup.json'))",
        ],
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def litellm_costs(python: Path, cases: list[dict[str, object]]) -> dict[int, dict[str, str]]:
    """LiteLLM's cost of every case (see litellm_cost.py), by case id."""
    import json

    out = subprocess.run(
        [str(python), str(PEER_SCRIPT)],
        input="".join(json.dumps(c) + "\n" for c in cases),
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {int(r["id"]): r for r in rows}
