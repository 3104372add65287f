"""Whether `finops demo` publishes its hour, so that running it again never
counts traffic twice. Pure.

The demo simulates the last whole hour. Usage events carry ids and are
deduplicated, but cache events have none (the contract has no id), so
re-sending the hour would double its cache counts, and GPU samples no newer
than the ones stored are dead-lettered as out of order. So each demo hour is
published once and remembered with its settings (rate and incident): a
re-run with the same settings shows that hour again without publishing. The
hour is claimed before publishing and marked complete after, so a
publication that was cut short is refused too, never repeated.
A run with other settings (say ``--incident cache-thrash`` after a plain
demo) is refused rather than mixed into the same hour's windows, and it
cannot go back to an earlier hour either: its telemetry would be older than
the samples already stored, and dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class DemoRun:
    """What a demo published in its hour."""

    rate: Decimal
    incident: str | None

    def describe(self) -> str:
        return f"--rate {self.rate}" + (f" --incident {self.incident}" if self.incident else "")


@dataclass(frozen=True)
class HeldHour:
    """The demo an hour holds; ``complete`` once all of it was published."""

    run: DemoRun
    complete: bool


class HourTaken(Exception):
    pass


_ELSEWHERE = (
    "run it after the next whole hour, or against fresh services (FINOPS_HOME=<an empty directory>)"
)


def must_publish(held: HeldHour | None, want: DemoRun) -> bool:
    """Whether the hour that holds ``held`` (None: no demo) is published for
    ``want``; raises HourTaken if it holds a demo with other settings, or
    one whose publication never finished (its counts may be partial, and
    publishing again would double what did arrive)."""
    if held is None:
        return True
    if not held.complete:
        raise HourTaken(
            f"the demo with {held.run.describe()} started publishing this hour and"
            " did not finish (it was interrupted, or is still running), so the hour"
            f" may hold part of it; {_ELSEWHERE}"
        )
    if held.run == want:
        return False
    raise HourTaken(
        f"this hour already holds the demo with {held.run.describe()}; a demo with"
        f" {want.describe()} needs an hour of its own: {_ELSEWHERE}"
    )
