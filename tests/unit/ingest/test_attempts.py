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
    numbers = [attempts.number("t", r, c) for r, c in seen]
    for request in "abc":
        first_seen = list(dict.fromkeys(c for r, c in seen if r == request))
        got = {c: n for (r, c), n in zip(seen, numbers, strict=True) if r == request}
        assert got == {c: i + 1 for i, c in enumerate(first_seen)}


def test_memory_is_bounded_by_forgetting_the_oldest_request() -> None:
    attempts = Attempts(max_calls=3)
    attempts.number("t", "r1", "x")
    attempts.number("t", "r1", "y")
    attempts.number("t", "r2", "x")
    attempts.number("t", "r3", "x")  # four calls: r1 is forgotten
    assert attempts.number("t", "r1", "y") == 1
    assert attempts.number("t", "r3", "x") == 1


def test_tenants_number_their_own_requests() -> None:
    attempts = Attempts()
    assert attempts.number("a", "trace", "c1") == 1
    assert attempts.number("b", "trace", "c9") == 1  # another tenant's reuse of the id
    assert attempts.number("a", "trace", "c2") == 2
