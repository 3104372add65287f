"""The bench's memory sampler, on this very process: it sees memory this
test allocates, as its peak and as growth over the second half."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.testbed.cpu import RssSampler, rss_mb


def test_the_sampler_sees_an_allocation_as_peak_and_as_late_growth() -> None:
    sampler = RssSampler([os.getpid()], every_s=0.01)
    time.sleep(0.2)
    held = bytearray(80 * 10**6)  # touched (zeroed), so resident
    time.sleep(0.2)
    sampler.stop()
    first = sampler.samples[0]
    assert sampler.peak_mb - first >= 70
    assert sampler.second_half_growth_mb >= 0  # the allocation is not undone
    assert len(held) == 80 * 10**6


def test_a_process_that_is_gone_has_no_resident_memory() -> None:
    assert rss_mb(2**22 + 12345) is None


def test_a_process_that_exited_unreaped_adds_no_samples() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # not reaped yet
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sampler = RssSampler([proc.pid], every_s=0.01)
    time.sleep(0.1)
    sampler.stop()
    proc.wait()
    assert sampler.samples == []
    assert sampler.peak_mb == 0.0
