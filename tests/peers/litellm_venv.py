"""A venv of its own with the pinned LiteLLM, installed by the tests (once
per machine, under a cache directory), so LiteLLM's code never runs in the
project's interpreter and no unpinned release is ever installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

from tests.peers.venvs import peer_python

LITELLM: Final = "litellm==1.108.14"
PEER_SCRIPT: Final = Path(__file__).with_name("litellm_cost.py")
# LiteLLM's own dependencies, pinned as well (some LiteLLM releases on PyPI
# were compromised; a floating dependency is the same risk one step away).
CONSTRAINTS: Final = Path(__file__).with_name("litellm-constraints.txt")


def litellm_python() -> Path:
    """The interpreter of the pinned LiteLLM's venv, created if missing."""
    return peer_python(LITELLM.replace("==", "-"), [LITELLM], CONSTRAINTS)


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
