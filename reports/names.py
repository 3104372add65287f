"""Safe names for what carries a tenant's, route's or feature's name out of
the database: files the project writes, URLs the pages serve, CSV cells a
spreadsheet opens. Names come from producers, so any character can be in
them (a slash, ``..``, markup, a leading ``=``); these make them harmless
without losing which name they stand for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from typing import Final

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_NUMBER: Final = re.compile(r"-?\d+(?:\.\d+)?")


def file_slug(name: str) -> str:
    """A file-name part for ``name``: ASCII letters, digits, ``.``, ``_`` and
    ``-`` only, at most 40 of them and never starting with a dot, then a
    short hash of the whole name, so two names never share a file."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _UNSAFE.sub("-", ascii_).strip("-.")[:40].strip("-.") or "x"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def url_key(name: str) -> str:
    """The key a page is served under: the name itself when it is plain
    (letters, digits, ``_``, ``.``, ``-``; at most 64), else ``~`` and the
    name's UTF-8 in unpadded base64url. Reversible, and URL-safe for any name."""
    if _PLAIN_KEY.fullmatch(name) and name not in (".", ".."):
        return name
    return "~" + base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def from_url_key(key: str) -> str | None:
    """The name ``url_key`` made ``key`` from; None for a key it never makes."""
    if not key.startswith("~"):
        return key if url_key(key) == key else None
    try:
        name = base64.urlsafe_b64decode(key[1:] + "=" * (-len(key[1:]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return name if url_key(name) == key else None


def csv_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text: one that begins with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``
    (OWASP), except a plain decimal number such as an amount of ``-0.02``."""
    if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
