"""Redaction: credentials under any key name that says so, at any depth and
in any case, and credential-shaped values anywhere, never reach a dead
letter or a log line; the contracts' own counts stay."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.stream.dead_letter import dead_letter
from pipeline.stream.redaction import REDACTED, kept_whole, redact, redact_logs
from tests.factories import event, line

KEYS = [
    "openai_api_key",
    "x_api_key",
    "X-Auth-Token",
    "client_secret",
    "Password",
    "AUTHORIZATION",
    "aws_credentials",
    "refresh_token",
    "apiKey",
]
VALUES = [
    "sk-proj-abcdefghijklmnop",
    "AKIAABCDEFGHIJKLMNOP",
    "ASIAABCDEFGHIJKLMNOP",
    "Bearer abc.def.ghijklmnop",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
    "xoxb-123456789012-abcdefghij",
]


@pytest.mark.parametrize("key", KEYS)
def test_a_credential_key_is_redacted_at_any_depth(key: str) -> None:
    secret = "hunter2-not-shaped-like-a-key"
    doc = {**event(), key: secret, "meta": {"headers": [{key: secret}]}}
    kept = json.loads(redact(json.dumps(doc).encode()))
    assert secret not in json.dumps(kept)
    assert kept[key] == REDACTED and kept["meta"]["headers"][0][key] == REDACTED
    # The contract's own fields are counts, not credentials.
    assert kept["input_tokens"] == 4000 and kept["cache_read_tokens"] == 0


@pytest.mark.parametrize("value", VALUES)
def test_a_credential_shaped_value_is_masked_wherever_it_stands(value: str) -> None:
    raw = line(event(route=f"/v1/x?auth={value}", feature=value))
    assert value.encode() not in redact(raw)
    broken = b'{"tenant": "acme", "note": "' + value.encode() + b'", '
    assert value.encode() not in redact(broken)


def test_an_unparseable_line_naming_a_credential_key_keeps_only_its_size() -> None:
    broken = b'{"openai_api_key": "hunter2", "tenant": '
    kept = redact(broken)
    assert b"hunter2" not in kept and str(len(broken)).encode() in kept
    # A broken line that names only the contract's counts is kept as sent.
    assert redact(b'{"input_tokens": 5, ') == b'{"input_tokens": 5, '


def test_log_lines_never_carry_a_credential(caplog: pytest.LogCaptureFixture) -> None:
    redact_logs()
    with caplog.at_level(logging.INFO):
        logging.getLogger("finops.test").info("refused %s for %s", VALUES[0], "acme")
    assert VALUES[0] not in caplog.text and "acme" in caplog.text


def test_only_a_word_that_starts_like_a_key_is_masked() -> None:
    raw = line(event(tenant="task-12345678", event_id="risk-analytics-0001"))
    assert redact(raw) == raw


def test_a_stand_in_for_a_line_not_kept_is_never_replayed() -> None:
    assert not kept_whole(redact(b"x" * 70_000))
    assert not kept_whole(redact(b'{"openai_api_key": "s3cret", '))
    assert kept_whole(redact(line(event())))


def test_a_reason_holds_no_control_character() -> None:
    letter = dead_letter(0, 0, 0, "duplicate_key: \x00 given twice", b"{}")
    assert "\x00" not in letter.reason and "\\x00" in letter.reason
