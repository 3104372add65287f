from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.ingest.attempts import Attempts

calls = st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("uvwxyz")), max_size=40)


@given(calls)
def test_each_requests_calls_are_numbered_one_up_in_first_seen_order(
    seen: list[tuple[str, str]],
) -> None:
    attempts = Attempts()
    numbers = [attempts.number(r, c) for r, c in seen]
    for request in "abc":
        first_seen = list(dict.fromkeys(c for r, c in seen if r == request))
        got = {c: n for (r, c), n in zip(seen, numbers, strict=True) if r == request}
        assert got == {c: i + 1 for i, c in enumerate(first_seen)}


def test_memory_is_bounded_by_forgetting_the_oldest_request() -> None:
    attempts = Attempts(max_requests=2)
    attempts.number("r1", "x")
    attempts.number("r1", "y")
    attempts.number("r2", "x")
    attempts.number("r3", "x")  # r1 is forgotten
    assert attempts.number("r1", "y") == 1
