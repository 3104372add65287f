import polars as pl

from pipeline.spend.recent_keys import RecentKeys


def keys(*values: str) -> pl.Series:
    return pl.Series(values, dtype=pl.String())


def test_knows_only_what_was_added() -> None:
    recent = RecentKeys(capacity=10)
    assert recent.known(keys("a", "b")).to_list() == [False, False]
    recent.add(keys("a"))
    recent.add(keys("c", "d"))
    assert recent.known(keys("a", "b", "d")).to_list() == [True, False, True]


def test_forgets_the_oldest_chunks_beyond_capacity_but_keeps_the_newest() -> None:
    recent = RecentKeys(capacity=3)
    recent.add(keys("a", "b"))
    recent.add(keys("c", "d"))
    assert recent.known(keys("a", "c")).to_list() == [False, True]
    assert len(recent) == 2
    recent.add(keys("e", "f", "g", "h"))  # a chunk larger than capacity is still kept
    assert recent.known(keys("c", "h")).to_list() == [False, True]
