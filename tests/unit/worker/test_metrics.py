"""Consumer lag: the high watermark minus the applied offset, per owned
partition whose both ends are known; never negative."""

from __future__ import annotations

from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from pipeline.worker.metrics import lag


class TP(NamedTuple):
    topic: str
    partition: int


def test_lag_is_the_end_minus_what_was_applied() -> None:
    ends = {TP("usage", 0): 100, TP("usage", 1): 7, TP("usage", 2): None, TP("cache", 0): 5}
    applied = {"usage": {0: 40, 1: 7, 2: 3}, "cache": {}}
    assert lag(ends, ends.get, applied) == {("usage", 0): 60, ("usage", 1): 0}


@given(st.dictionaries(st.integers(0, 20), st.tuples(st.integers(0, 10**9), st.integers(0, 10**9))))
def test_lag_is_never_negative_and_only_for_owned_partitions(
    parts: dict[int, tuple[int, int]],
) -> None:
    owned = [TP("usage", p) for p in parts]
    applied = {"usage": {p: a for p, (_, a) in parts.items()}}
    out = lag(owned, lambda tp: parts[tp.partition][0], applied)
    assert set(out) == {("usage", p) for p in parts}
    assert all(v == max(0, parts[p][0] - parts[p][1]) for (_, p), v in out.items())
