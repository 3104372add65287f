"""What the stream admits, beyond the contract: bounds on size and event time.

The contract (``models.contracts``) says what a valid event *is*; admission
says what this pipeline *accepts now*. Both bounds follow Stripe's meter
events: an event older than the dedup horizon could slip past deduplication
and a far-future one would open windows nobody reports yet, so both are
dead-lettered with their reason and can be replayed after review.
Pure: the clock is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

TOO_OLD = "ts_too_old"
IN_FUTURE = "ts_in_future"
TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Admission:
    now: datetime
    max_age: timedelta = timedelta(days=35)
    max_future: timedelta = timedelta(minutes=5)
    max_message_bytes: int = 900_000

    @property
    def earliest(self) -> datetime:
        return self.now - self.max_age

    @property
    def latest(self) -> datetime:
        return self.now + self.max_future

    def ts_verdict(self) -> pl.Expr:
        """Per event: null if admitted, else the dead-letter reason."""
        ts = pl.col("ts")
        return (
            pl.when(ts < self.earliest)
            .then(pl.lit(f"{TOO_OLD}: event time before {self.earliest.isoformat()}"))
            .when(ts > self.latest)
            .then(pl.lit(f"{IN_FUTURE}: event time after {self.latest.isoformat()}"))
            .otherwise(pl.lit(None, dtype=pl.String()))
        )

    def size_verdict(self, size: int) -> str | None:
        if size > self.max_message_bytes:
            return f"{TOO_LARGE}: message of {size} bytes > {self.max_message_bytes}"
        return None
