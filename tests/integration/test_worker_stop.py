"""A worker told to stop before faust has installed its own SIGTERM handler
(here: while it is still importing) exits with its clean-stop code, not by
the signal: supervisors send SIGTERM whenever they like, and the chaos
harness counts a worker that dies by it as an unclean stop. A drain's clean
stop before it caught up is 75, never the 0 that says it did."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.embedded.runtime import free_port
from tests.integration.conftest import private_env

pytestmark = pytest.mark.integration

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("args", "code", "after_s"),
    [(("worker",), 0, 0.0), (("worker",), 0, 0.3), (("worker", "--drain"), 75, 0.0)],
)
def test_sigterm_while_importing_is_a_clean_exit(
    tmp_path: Path, args: tuple[str, ...], code: int, after_s: float
) -> None:
    # after_s: how long after the handler is in place; importing takes over
    # 1.5 s even on an idle machine, so the signal still lands mid-import.
    # Nothing listens on these: a worker that got past its imports would exit
    # 1 on the unreachable broker, and one without the handler would die -15.
    env = {
        **private_env(tmp_path / "home"),
        "FINOPS_KAFKA_URL": f"kafka://127.0.0.1:{free_port()}",
        "FINOPS_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not _catches_sigterm(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.005)
        time.sleep(after_s)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, out.decode(errors="replace")
