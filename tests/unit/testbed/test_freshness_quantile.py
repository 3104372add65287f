"""The bench's freshness quantiles, read from a worker's cumulative
histogram the way Prometheus's histogram_quantile reads it."""

from __future__ import annotations

import bisect
import math

from hypothesis import given
from hypothesis import strategies as st

from pipeline.testbed.freshness import all_within, quantile

BOUNDS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60)


def _buckets(samples: list[float]) -> list[tuple[float, float]]:
    """Cumulative (le, count) pairs, as a histogram exposes them."""
    return [(b, float(sum(s <= b for s in samples))) for b in (*BOUNDS, math.inf)]


def test_a_quantile_is_interpolated_inside_its_bucket() -> None:
    # 10 events at or below 0.5 s, 10 more at or below 1 s: the median is the
    # 0.5 bound, the 0.75 quantile half way between 0.5 and 1.
    buckets = [(0.5, 10.0), (1.0, 20.0), (math.inf, 20.0)]
    assert quantile(buckets, 0.5) == 0.5
    assert quantile(buckets, 0.75) == 0.75
    assert all_within(buckets) == 1.0


def test_a_quantile_beyond_the_largest_bound_is_that_bound() -> None:
    buckets = [(0.5, 1.0), (1.0, 2.0), (math.inf, 10.0)]
    assert quantile(buckets, 0.99) == 1.0
    assert all_within(buckets) == math.inf


def test_no_observations_have_no_quantile() -> None:
    assert quantile([(1.0, 0.0), (math.inf, 0.0)], 0.99) is None
    assert quantile([], 0.5) is None
    assert all_within([(1.0, 0.0), (math.inf, 0.0)]) is None


@given(
    st.lists(st.floats(0.001, 59.0), min_size=1, max_size=200),
    st.floats(0.01, 1.0),
)
def test_a_quantile_lies_in_the_bucket_of_the_true_one(samples: list[float], q: float) -> None:
    got = quantile(_buckets(samples), q)
    assert got is not None
    # The smallest sample with at least q of all at or below it...
    truth = sorted(samples)[max(0, math.ceil(q * len(samples)) - 1)]
    # ...falls in a bucket (lower, upper]; the estimate is inside it.
    i = bisect.bisect_left(BOUNDS, truth)
    lower, upper = (BOUNDS[i - 1] if i else 0.0), BOUNDS[i]
    assert lower <= got <= upper
    assert all_within(_buckets(samples)) == BOUNDS[bisect.bisect_left(BOUNDS, max(samples))]
