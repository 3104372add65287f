"""Decode a batch of usage messages into one validated polars frame.

Fast path: all lines of all messages go through polars' NDJSON reader at
once and are checked column-wise. Any line the fast path cannot prove valid
(a type error in its message, a failed check, an identifier that is not a
JSON string, a text-bearing key) is re-validated alone by the pydantic
contract, which either accepts it or gives the dead-letter reason. So the
contract is the single authority, and a bad line costs the batch only the
slow path for that line's message.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Final

import polars as pl
from pydantic import ValidationError

from models.contracts import TEXT_FIELDS, UsageEvent
from pipeline.dead_letter import DeadLetter, dead_letter, reason_for

IDENT_FIELDS: Final = (
    "event_id",
    "tenant",
    "route",
    "feature",
    "model",
    "provider",
    "node_id",
    "request_id",
)
TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
OPTIONAL_TEXT: Final = ("retry_reason", "fallback_from")

SCHEMA: Final[dict[str, pl.DataType]] = {
    **{f: pl.String() for f in IDENT_FIELDS},
    "ts": pl.String(),
    "attempt": pl.Int64(),
    **{f: pl.Int64() for f in TOKEN_FIELDS},
    "batch": pl.Boolean(),
    "status": pl.String(),
    "retry_reason": pl.String(),
    "fallback_from": pl.String(),
    "latency_ms": pl.Int64(),
    "ttft_ms": pl.Int64(),
    "local_input_tokens": pl.Int64(),
    "batch_size": pl.Int64(),
    "response_cache_hit": pl.Boolean(),
}
TS_DTYPE: Final = pl.Datetime("us", "UTC")
# Position columns: where each event came from, for offsets and dead letters.
POSITION: Final = {"partition": pl.Int32(), "offset": pl.Int64(), "line": pl.Int32()}
FRAME_SCHEMA: Final = {**POSITION, **SCHEMA, "ts": TS_DTYPE}

# An identifier key whose value is not a JSON string (polars would coerce a
# number, bool, object or array into text), or a key that carries prompt or
# completion text: such lines must be judged by the contract, not the fast path.
# Inside a JSON string a quote is escaped, so these cannot match string contents.
_SUSPECT: Final = re.compile(
    rb'"(?:'
    + b"|".join(f.encode() for f in (*IDENT_FIELDS, "ts", "status", *OPTIONAL_TEXT))
    + rb')"\s*:\s*[^"\s]|"(?:'
    + b"|".join(f.encode() for f in sorted(TEXT_FIELDS))
    + rb')"\s*:'
)
# Every known key with a non-null value. A line where this count differs from
# the fields the reader filled has a duplicate key (polars keeps the first
# value, pydantic the last) or a known key nested in an unknown object: the
# contract must judge it.
_KNOWN_KEY: Final = r'"(?:' + "|".join(re.escape(f) for f in SCHEMA) + r')"\s*:\s*[^n\s]'
# The RFC 3339 subset the fast path parses itself; anything else goes to pydantic.
_RFC3339: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
_STATUSES: Final = ["ok", "error", "timeout", "refused", "invalid_output"]
_MAX_TOKENS: Final = 10**12
_JSON_WS: Final = b" \t\r\n"


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True)
class Decoded:
    events: pl.DataFrame  # FRAME_SCHEMA, one row per valid event
    dead: list[DeadLetter]


def split_lines(value: bytes) -> list[bytes]:
    return [line for line in value.split(b"\n") if line.strip(_JSON_WS)]


def decode(messages: Sequence[Message]) -> Decoded:
    lines, positions, slow = _lines(messages)
    suspect = lines.str.contains(_SUSPECT.pattern.decode()).fill_null(True)
    if suspect.any():
        slow.extend(
            (text.encode(), *_position(positions, i))
            for i, text in zip(suspect.arg_true().to_list(), lines.filter(suspect), strict=True)
        )
        lines, positions = lines.filter(~suspect), positions.filter(~suspect)
    # The common case: every line is clean, so the messages joined as they
    # are is exactly the NDJSON the reader needs (blank lines it skips, and a
    # row count check guards the positions).
    raw = None if slow else b"\n".join(m.value for m in messages)
    frame, rejected = _read_fast(lines, positions, raw)
    slow.extend(rejected)

    frames = [frame] if frame is not None else []
    dead: list[DeadLetter] = []
    rows: list[dict[str, object]] = []
    for line, partition, offset, line_no in slow:
        try:
            event = UsageEvent.model_validate_json(line)
        except ValidationError as exc:
            dead.append(dead_letter(partition, offset, line_no, reason_for(exc), line))
            continue
        row: dict[str, object] = event.model_dump(mode="python")
        row["ts"] = event.ts.astimezone(UTC)
        row["status"] = event.status.value
        row.update(partition=partition, offset=offset, line=line_no)
        rows.append(row)
    if rows:
        frames.append(pl.DataFrame(rows, schema=FRAME_SCHEMA))
    events = pl.concat(frames) if frames else pl.DataFrame(schema=FRAME_SCHEMA)
    return Decoded(events, dead)


def _lines(messages: Sequence[Message]) -> tuple[pl.Series, pl.DataFrame, list[Rejected]]:
    """Split messages into non-blank lines inside polars, with their positions.
    A message that is not UTF-8 is split in Python and all its lines go to the
    slow path (returned third)."""
    values = [m.value for m in messages]
    try:
        text = pl.Series(values, dtype=pl.Binary()).cast(pl.String())
        slow: list[Rejected] = []
    except pl.exceptions.ComputeError:
        decoded = [_utf8_or_none(v) for v in values]
        slow = [
            (line, m.partition, m.offset, i)
            for m, d in zip(messages, decoded, strict=True)
            if d is None
            for i, line in enumerate(split_lines(m.value))
        ]
        text = pl.Series(decoded, dtype=pl.String())
    frame = (
        pl.DataFrame(
            {
                "partition": [m.partition for m in messages],
                "offset": [m.offset for m in messages],
                "text": text,
            },
            schema={"partition": pl.Int32(), "offset": pl.Int64(), "text": pl.String()},
        )
        .drop_nulls("text")
        .with_columns(pl.col("text").str.split("\n"))
        .explode("text")
        .filter(pl.col("text").str.strip_chars(_JSON_WS.decode()) != "")
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int32()).over("partition", "offset").alias("line")
        )
    )
    return frame["text"], frame.select("partition", "offset", "line"), slow


def _utf8_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


Rejected = tuple[bytes, int, int, int]  # line, partition, offset, line number


def _position(positions: pl.DataFrame, i: int) -> tuple[int, int, int]:
    p, o, n = positions.row(i)
    return int(p), int(o), int(n)


def _read_fast(
    lines: pl.Series, positions: pl.DataFrame, raw: bytes | None = None
) -> tuple[pl.DataFrame | None, list[Rejected]]:
    """Parse and check lines column-wise; return the good rows and the rest."""
    if lines.is_empty():
        return None, []
    parsed = _read_ndjson(lines, raw)
    if parsed is None:
        # Some line has a value of the wrong JSON type; find it per message.
        return _read_per_message(lines, positions)
    frame = pl.concat([positions, parsed], how="horizontal").with_columns(
        pl.col("ts")
        .str.to_datetime(_TS_FORMAT, strict=False, time_zone="UTC", time_unit="us")
        .alias("_ts")
    )
    filled = pl.sum_horizontal(pl.col(f).is_not_null() for f in SCHEMA)
    ok = _checks() & (filled == pl.Series(lines.str.count_matches(_KNOWN_KEY)))
    good = frame.filter(ok).with_columns(pl.col("_ts").alias("ts")).drop("_ts")
    bad = frame.select((~ok).alias("bad")).to_series()
    rejected = [
        (text.encode(), *_position(positions, i))
        for i, text in zip(bad.arg_true().to_list(), lines.filter(bad), strict=True)
    ]
    return good.select(FRAME_SCHEMA.keys()), rejected


def _read_per_message(
    lines: pl.Series, positions: pl.DataFrame
) -> tuple[pl.DataFrame | None, list[Rejected]]:
    frames: list[pl.DataFrame] = []
    rejected: list[Rejected] = []
    bounds = (
        positions.with_row_index("_i")
        .group_by("partition", "offset", maintain_order=True)
        .agg(pl.col("_i").min().alias("start"), pl.len().alias("n"))
    )
    for _, _, start, n in bounds.iter_rows():
        chunk, chunk_pos = lines.slice(start, n), positions.slice(start, n)
        if _read_ndjson(chunk) is None:
            rejected.extend(
                (text.encode(), *_position(chunk_pos, k)) for k, text in enumerate(chunk)
            )
        else:
            frame, bad = _read_fast(chunk, chunk_pos)
            if frame is not None:
                frames.append(frame)
            rejected.extend(bad)
    return (pl.concat(frames) if frames else None), rejected


def _read_ndjson(lines: pl.Series, raw: bytes | None = None) -> pl.DataFrame | None:
    """All lines parsed at once, or None if any line does not fit the schema.
    A row count that differs from the line count (a line the reader skipped
    or split) also counts as a failure, so positions can never shift."""
    data = raw if raw is not None else lines.str.join("\n").item().encode()
    try:
        parsed = pl.read_ndjson(io.BytesIO(data), schema=SCHEMA)
    except pl.exceptions.PolarsError:
        return None
    return parsed if parsed.height == lines.len() else None


def _checks() -> pl.Expr:
    """Column-wise twins of the contract's rules; a row failing any goes to pydantic."""
    ident_ok = [
        pl.col(f).is_not_null()
        & pl.col(f).str.len_chars().is_between(1, 256)
        & pl.col(f).str.contains(r"\S")
        & ~pl.col(f).str.contains("\x00", literal=True)
        for f in IDENT_FIELDS
    ]
    tokens_ok = [
        pl.col(f).is_not_null() & pl.col(f).is_between(0, _MAX_TOKENS) for f in TOKEN_FIELDS
    ]
    optional_ok = [
        pl.col("retry_reason").is_null() | (pl.col("retry_reason").str.len_chars() <= 256),
        pl.col("fallback_from").is_null() | (pl.col("fallback_from").str.len_chars() <= 256),
        pl.col("latency_ms").is_null() | (pl.col("latency_ms") >= 0),
        pl.col("ttft_ms").is_null() | (pl.col("ttft_ms") >= 0),
        pl.col("local_input_tokens").is_null()
        | pl.col("local_input_tokens").is_between(0, _MAX_TOKENS),
        pl.col("batch_size").is_null() | (pl.col("batch_size") >= 1),
    ]
    rest = [
        pl.col("ts").is_not_null()
        & pl.col("ts").str.contains(_RFC3339)
        & pl.col("_ts").is_not_null(),
        pl.col("attempt").is_not_null() & pl.col("attempt").is_between(1, 10_000),
        pl.col("batch").is_not_null(),
        pl.col("status").is_not_null() & pl.col("status").is_in(_STATUSES),
        (pl.col("cache_read_tokens") + pl.col("cache_write_tokens")) <= pl.col("input_tokens"),
    ]
    return pl.all_horizontal([*ident_ok, *tokens_ok, *optional_ok, *rest]).fill_null(False)
