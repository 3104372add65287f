"""The bench's memory sampler, on this very process: it sees memory this
test allocates, as its peak and as growth over the second half."""

from __future__ import annotations

import os
import time

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
