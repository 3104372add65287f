"""Venvs of their own for the real clients the tests drive (LiteLLM, the
OpenTelemetry SDK's exporters), installed by the tests once per machine
under a cache directory, every package pinned exactly by a constraints
file, so no peer's code runs in the project's interpreter and no unpinned
release is ever installed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path


def _root() -> Path:
    return Path(os.environ.get("FINOPS_PEER_CACHE", Path.home() / ".cache" / "finops-peers"))


def peer_python(name: str, packages: list[str], constraints: Path) -> Path:
    """The interpreter of the venv ``name`` with ``packages`` installed under
    ``constraints`` (a venv per pinned set), created if missing."""
    digest = hashlib.sha256(constraints.read_bytes() + "\n".join(packages).encode()).hexdigest()
    root = _root() / f"{name}-{digest[:8]}"
    python = root / "bin" / "python"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        # Test processes in parallel share one install.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "installed").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 "-c", str(constraints), *packages],
                check=True,
                timeout=900,
            )  # fmt: skip
            (root / "installed").write_text("\n".join(packages))
    return python
