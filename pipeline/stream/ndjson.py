"""Decode a batch of NDJSON messages into one validated polars frame, for
any contract that declares its column-wise twin (:class:`ColumnContract`).

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
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from enum import Enum
from typing import Any, Final, Generic, TypeVar

import numpy as np
import polars as pl
from pydantic import BaseModel, ValidationError

from models.contracts import DUPLICATE_KEY, RFC3339, TEXT_FIELDS, duplicate_keys
from pipeline.stream.dead_letter import DeadLetter, dead_letter, reason_for
from pipeline.stream.message import JSON_WS, Message, split_lines

log = logging.getLogger(__name__)
TS_DTYPE: Final = pl.Datetime("us", "UTC")
# Position columns: where each event came from, for offsets and dead letters.
POSITION: Final = {"partition": pl.Int32(), "offset": pl.Int64(), "line": pl.Int32()}
# The contract's one timestamp form, which the fast path parses itself.
_TS_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.f%#z"
MAX_TOKENS: Final = 10**12
# How polars renders a JSON number, boolean, array or object read into a
# text column: a value that looks like this may not have been a JSON string.
_RENDERED: Final = r"^(?:-?\d+(?:\.\d+)?|true|false)$|^[\[{]"


@dataclass(frozen=True)
class Decoded:
    events: pl.DataFrame  # the contract's frame schema, one row per valid event
    dead: list[DeadLetter]


def _present(name: str, valid: pl.Expr, required: bool) -> pl.Expr:
    """``valid`` where ``name`` is set; a required field must be set, an
    optional one may be null."""
    return pl.col(name).is_not_null() & valid if required else pl.col(name).is_null() | valid


# The contract's FORBIDDEN_CHARS in the regex dialect polars speaks (its
# strings are UTF-8, so they cannot hold the surrogates the contract names).
_FORBIDDEN: Final = (
    r"[\x00-\x1f\x7f-\x9f\x{061c}\x{200b}-\x{200f}\x{2028}-\x{202e}\x{2060}"
    r"\x{2066}-\x{2069}\x{feff}]"
)


def ident(name: str, *, required: bool = True, length: int = 256) -> pl.Expr:
    """The contract's ``Ident``: 1..256 characters, not blank, none forbidden."""
    valid = (
        pl.col(name).str.len_chars().is_between(1, length)
        & pl.col(name).str.contains(r"\S")
        & ~pl.col(name).str.contains(_FORBIDDEN)
    )
    return _present(name, valid, required)


def text(name: str, *, length: int = 256) -> pl.Expr:
    """The contract's optional ``Text``: at most 256 characters, none forbidden."""
    valid = (pl.col(name).str.len_chars() <= length) & ~pl.col(name).str.contains(_FORBIDDEN)
    return _present(name, valid, required=False)


def integer(name: str, low: int, high: int, *, required: bool = True) -> pl.Expr:
    """A bounded integer field, ``low``..``high`` inclusive."""
    return _present(name, pl.col(name).is_between(low, high), required)


def tokens(name: str, *, required: bool = True) -> pl.Expr:
    """The contract's ``Tokens``: an integer in 0..10^12."""
    return integer(name, 0, MAX_TOKENS, required=required)


def _parsed_ts() -> pl.Expr:
    """``_ts``: ``ts`` parsed in the RFC 3339 subset, null where it did not parse."""
    return (
        pl.col("ts")
        .str.to_datetime(_TS_FORMAT, strict=False, time_zone="UTC", time_unit="us")
        .alias("_ts")
    )


def timestamp() -> pl.Expr:
    """``ts`` is an RFC 3339 string with an offset that parsed."""
    return (
        pl.col("ts").is_not_null()
        & pl.col("ts").str.contains(RFC3339)
        & pl.col("_ts").is_not_null()
    )


@dataclass(frozen=True)
class ColumnContract:
    """A pydantic contract and its column-wise twin.

    ``schema`` is the JSON-level schema (``ts`` as a string); ``strings``
    are the fields whose JSON values must be strings (polars would coerce a
    number into text); ``checks`` returns the column-wise rules, each a twin
    of one of the model's; ``defaults`` fills optional columns the model
    defaults when absent."""

    model: type[BaseModel]
    schema: dict[str, pl.DataType]
    strings: tuple[str, ...]
    checks: Callable[[], list[pl.Expr]]
    defaults: dict[str, Any] = field(default_factory=dict)
    _suspect: str = field(init=False, repr=False)
    _known_key: str = field(init=False, repr=False)
    _texts: frozenset[str] = field(init=False, repr=False)
    _value_columns: tuple[str, ...] = field(init=False, repr=False)
    _per_value: list[pl.Expr] = field(init=False, repr=False)
    _per_row: list[pl.Expr] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Lines the contract must judge alone: any backslash (an escape can
        # spell a key or a value another way: "t\u0065nant" is "tenant"), an
        # identifier key whose value is not a JSON string, a key that carries
        # prompt or completion text, an integer spelled as a fraction, with
        # an exponent or a leading zero (the contract takes JSON integers
        # only). Without a backslash every quote opens or closes a key or a
        # string, so these cannot match string contents.
        integers = [c for c, t in self.schema.items() if t == pl.Int64()]
        suspect = (
            r"\\|"
            + _keys(self.strings)
            + r'\s*[^"\s]|'
            + _keys(sorted(TEXT_FIELDS))
            + "|"
            + _keys(integers)
            + r"\s*-?(?:0\d|\d*[.eE])"
        )
        # Any key, up to its colon: in a flat line with no backslash every
        # match is a top-level key, so a line that names one twice has a
        # duplicate key (polars keeps the first value, pydantic the last),
        # and the contract refuses it.
        known = r'"[^"]*"\s*:'
        # An explicit null where the contract has a default but no None: the
        # reader cannot tell it from an absent key.
        if self.defaults:
            suspect += "|" + _keys(self.defaults) + r"\s*null"
        object.__setattr__(self, "_suspect", suspect)
        object.__setattr__(self, "_known_key", known)
        object.__setattr__(
            self, "_texts", frozenset(c for c, t in self.schema.items() if t == pl.String())
        )
        # The contract's checks, and that every text column but ``ts`` holds
        # JSON strings, split by the columns they read: a check of those text
        # columns only is a function of their values, so it runs once per
        # distinct combination of them; the rest run on every row.
        values = self._texts - {"ts"}
        rendered = [pl.col(c).is_null() | ~pl.col(c).str.contains(_RENDERED) for c in values]
        per_value: list[pl.Expr] = []
        per_row: list[pl.Expr] = []
        for check in [*self.checks(), *rendered]:
            reads_values_only = frozenset(check.meta.root_names()) <= values
            (per_value if reads_values_only else per_row).append(check)
        object.__setattr__(self, "_value_columns", tuple(sorted(values)))
        object.__setattr__(self, "_per_value", per_value)
        object.__setattr__(self, "_per_row", per_row)

    @property
    def frame_schema(self) -> dict[str, pl.DataType]:
        return {**POSITION, **self.schema, "ts": TS_DTYPE}

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.frame_schema)

    def decode(self, messages: Sequence[Message]) -> Decoded:
        """Every line of ``messages``: valid ones as rows, the rest as dead
        letters. One read proves most batches whole (:meth:`proved`); a batch
        it cannot prove is checked line by line (:meth:`checked`). Should
        either raise, on any input, the contract alone judges every line
        (:meth:`judged`): no bytes can stop the stage."""
        try:
            proved = self.proved(messages)
            return Decoded(proved, []) if proved is not None else self.checked(messages)
        except Exception:
            log.warning("fault decode_fallback: judging %d messages line by line", len(messages))
            return self.judged(messages)

    def judged(self, messages: Sequence[Message]) -> Decoded:
        """Every line judged by the contract alone, one by one."""
        lines = [
            (raw, m.partition, m.offset, i)
            for m in messages
            for i, raw in enumerate(split_lines(m.value))
        ]
        return self._by_contract(lines, [])

    def checked(self, messages: Sequence[Message]) -> Decoded:
        """Line by line: the lines the column checks pass, and every other
        line judged by the contract itself."""
        lines, positions, slow = _lines(messages)
        suspect = (lines.str.contains(self._suspect) | _nested(lines)).fill_null(True)
        if suspect.any():
            slow.extend(
                (text.encode(), *_position(positions, i))
                for i, text in zip(suspect.arg_true().to_list(), lines.filter(suspect), strict=True)
            )
            lines, positions = lines.filter(~suspect), positions.filter(~suspect)
        # The common case: every line is clean, so the messages joined as they
        # are is exactly the NDJSON the reader needs (blank lines it skips, and
        # a row count check guards the positions).
        raw = None if slow else b"\n".join(m.value for m in messages)
        frame, rejected = self._read_fast(lines, positions, raw)
        slow.extend(rejected)

        return self._by_contract(slow, [frame] if frame is not None else [])

    def _by_contract(self, slow: list[Rejected], frames: list[pl.DataFrame]) -> Decoded:
        """``slow`` lines judged by the contract, added to ``frames``."""
        dead: list[DeadLetter] = []
        rows: list[dict[str, object]] = []
        for line, partition, offset, line_no in slow:
            event, reason = judge(self.model, line)
            if event is None:
                dead.append(dead_letter(partition, offset, line_no, reason, line))
                continue
            row: dict[str, object] = {
                k: v.value if isinstance(v, Enum) else v
                for k, v in event.model_dump(mode="python").items()
                if k in self.schema
            }
            row["ts"] = row["ts"].astimezone(UTC)  # type: ignore[attr-defined]
            row.update(partition=partition, offset=offset, line=line_no)
            rows.append(row)
        if rows:
            frames.append(pl.DataFrame(rows, schema=self.frame_schema))
        events = pl.concat(frames) if frames else self.empty()
        return Decoded(events, dead)

    def proved(self, messages: Sequence[Message]) -> pl.DataFrame | None:
        """The whole batch in one read, when that read itself proves every line
        is one the contract accepts, exactly as the contract reads it; else
        None (and :meth:`checked` decides, line by line).

        The proof, for a batch with no backslash (so no escapes: every ``"``
        opens or closes a JSON key or a JSON string value):

        - the reader parsed it, one row per line (it rejects two objects on a
          line, and the row count must equal the line count, so a blank line
          fails too);
        - every text column holds JSON strings only: polars would render a
          number, boolean, array or object as text, and no value here looks
          like such a rendering;
        - so each filled field accounts for the two quotes of its key, and
          each filled text field for two more of its value, and the batch
          has exactly that many quotes. Anything else in a line adds quotes:
          a duplicate key (the reader keeps the first value, the contract the
          last), an unknown or text-bearing key, an explicit null;
        - every contract check holds: those that read only text columns are
          evaluated once per distinct value, the rest per row.
        """
        raw = b"\n".join(m.value for m in messages)
        if not messages or b"\\" in raw:
            return None
        # The byte counts run in numpy, which lets go of the GIL: the
        # event loop and the other agents run meanwhile.
        data = np.frombuffer(raw, np.uint8)
        lines = _lines_per_message(data, [len(m.value) for m in messages])
        try:
            parsed = pl.read_ndjson(io.BytesIO(raw), schema=self.schema)
        except pl.exceptions.PolarsError:
            return None
        if parsed.height != sum(lines):
            return None
        height = parsed.height
        filled = {
            c: height - n for c, n in zip(parsed.columns, parsed.null_count().row(0), strict=True)
        }
        quotes = sum(n * (4 if c in self._texts else 2) for c, n in filled.items())
        if int(np.count_nonzero(data == ord('"'))) != quotes:
            return None
        frame = parsed.with_columns(_parsed_ts())
        for scope, checks in (
            (frame.select(self._value_columns).unique(), self._per_value),
            (frame, self._per_row),
        ):
            if checks and not scope.select(pl.all_horizontal(checks).fill_null(False).all()).item():
                return None
        positions = pl.DataFrame(
            {
                "partition": [m.partition for m in messages],
                "offset": [m.offset for m in messages],
                "n": lines,
            },
            schema={"partition": pl.Int32(), "offset": pl.Int64(), "n": pl.Int32()},
        ).select(
            pl.col("partition", "offset").repeat_by("n").explode(),
            pl.int_ranges("n", dtype=pl.Int32()).explode().alias("line"),
        )
        events = pl.concat([positions, frame], how="horizontal").with_columns(
            pl.col("_ts").alias("ts"), *(pl.col(k).fill_null(v) for k, v in self.defaults.items())
        )
        return events.select(self.frame_schema.keys())

    def _read_fast(
        self, lines: pl.Series, positions: pl.DataFrame, raw: bytes | None = None
    ) -> tuple[pl.DataFrame | None, list[Rejected]]:
        """Parse and check lines column-wise; return the good rows and the rest."""
        if lines.is_empty():
            return None, []
        parsed = self._read_ndjson(lines, raw)
        if parsed is None:
            # Some line has a value of the wrong JSON type; find it per message.
            return self._read_per_message(lines, positions)
        frame = pl.concat([positions, parsed], how="horizontal").with_columns(_parsed_ts())
        ok = pl.all_horizontal(self.checks()).fill_null(False) & _unique_keys(
            lines, self._known_key
        )
        # Evaluated once, for the good rows and the rejected ones alike.
        frame = frame.with_columns(ok.alias("_ok"))
        good = (
            frame.filter("_ok")
            .with_columns(pl.col("_ts").alias("ts"))
            .drop("_ts")
            .with_columns(pl.col(k).fill_null(v) for k, v in self.defaults.items())
        )
        bad = ~frame["_ok"]
        rejected = [
            (text.encode(), *_position(positions, i))
            for i, text in zip(bad.arg_true().to_list(), lines.filter(bad), strict=True)
        ]
        return good.select(self.frame_schema.keys()), rejected

    def _read_per_message(
        self, lines: pl.Series, positions: pl.DataFrame
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
            if self._read_ndjson(chunk) is None:
                rejected.extend(
                    (text.encode(), *_position(chunk_pos, k)) for k, text in enumerate(chunk)
                )
            else:
                frame, bad = self._read_fast(chunk, chunk_pos)
                if frame is not None:
                    frames.append(frame)
                rejected.extend(bad)
        return (pl.concat(frames) if frames else None), rejected

    def _read_ndjson(self, lines: pl.Series, raw: bytes | None = None) -> pl.DataFrame | None:
        """All lines parsed at once, or None if any line does not fit the schema.
        A row count that differs from the line count (a line the reader skipped
        or split) also counts as a failure, so positions can never shift."""
        data = raw if raw is not None else lines.str.join("\n").item().encode()
        try:
            parsed = pl.read_ndjson(io.BytesIO(data), schema=self.schema)
        except pl.exceptions.PolarsError:
            return None
        return parsed if parsed.height == lines.len() else None


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
        .filter(pl.col("text").str.strip_chars(JSON_WS.decode()) != "")
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int32()).over("partition", "offset").alias("line")
        )
    )
    return frame["text"], frame.select("partition", "offset", "line"), slow


def _lines_per_message(joined: np.ndarray[Any, Any], sizes: list[int]) -> list[int]:
    """Lines per message, from the messages joined by newlines: one more
    than the newlines inside each message."""
    starts = np.cumsum([0, *(n + 1 for n in sizes[:-1])])
    newlines = np.flatnonzero(joined == ord("\n"))
    inside = np.searchsorted(newlines, starts + sizes) - np.searchsorted(newlines, starts)
    return [int(n) + 1 for n in inside]


def _nested(lines: pl.Series) -> pl.Series:
    """Per line (with no backslash): does a value hold an object or an array?
    Such a line's keys are not all top-level, so the contract judges it."""
    return lines.str.replace_all(r'"[^"]*"', "").str.slice(1).str.contains(r"[\[{]")


def _unique_keys(lines: pl.Series, key: str) -> pl.Series:
    """Per line: does no key matching ``key`` occur twice?"""
    keys = lines.str.extract_all(key).list.eval(pl.element().str.strip_chars_end(": \t\r"))
    return keys.list.n_unique() == keys.list.len()


def _keys(fields: Iterable[str]) -> str:
    """A regex matching any of ``fields`` as a JSON key, up to its colon."""
    return r'"(?:' + "|".join(re.escape(f) for f in fields) + r')"\s*:'


def _utf8_or_none(value: bytes) -> str | None:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


Rejected = tuple[bytes, int, int, int]  # line, partition, offset, line number
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ValidLine(Generic[M]):
    """One line its contract accepted, with where it came from."""

    partition: int
    offset: int
    line: int
    raw: bytes
    value: M

    def rejected(self, reason: str) -> DeadLetter:
        return dead_letter(self.partition, self.offset, self.line, reason, self.raw)


def decode_lines(
    model: type[M], messages: Sequence[Message]
) -> tuple[list[ValidLine[M]], list[DeadLetter]]:
    """Every line of every message validated by ``model`` alone (the
    low-volume topics need no column-wise path), and the dead letters, with
    the contract's error as the reason."""
    values: list[ValidLine[M]] = []
    dead: list[DeadLetter] = []
    for m in messages:
        for i, raw in enumerate(split_lines(m.value)):
            value, reason = judge(model, raw)
            if value is None:
                dead.append(dead_letter(m.partition, m.offset, i, reason, raw))
            else:
                values.append(ValidLine(m.partition, m.offset, i, raw, value))
    return values, dead


def judge(model: type[M], raw: bytes) -> tuple[M | None, str]:
    """The contract's verdict on one line: the event, or None and the
    dead-letter reason. A line naming a key twice is refused as ambiguous
    before the contract reads it (the contract would keep the last value)."""
    twice = duplicate_keys(raw)
    if twice:
        return None, f"{DUPLICATE_KEY}: {', '.join(k[:64] for k in twice[:5])} given twice"
    try:
        return model.model_validate_json(raw), ""
    except ValidationError as exc:
        return None, reason_for(exc)


def _position(positions: pl.DataFrame, i: int) -> tuple[int, int, int]:
    p, o, n = positions.row(i)
    return int(p), int(o), int(n)
