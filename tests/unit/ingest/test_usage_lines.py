from __future__ import annotations

from pipeline.ingest.outcome import MAX_LINE_BYTES
from pipeline.ingest.usage_lines import map_lines
from pipeline.stream.redaction import redact
from tests.factories import event, line


def test_lines_are_judged_as_a_worker_would_and_published_as_sent() -> None:
    good = line(event(event_id="a"))
    body = b"\n".join([
        good,
        b'{"event_id": "b", "event_id": "c"}',
        line(event(event_id="t", messages="hello")),
        b" " * 10 + b"{" + b" " * MAX_LINE_BYTES + b"}",
        b"",
    ])  # fmt: skip
    out = map_lines(body)
    assert out.lines == [good] and out.tenants == ["acme"]
    assert [r.reason.split(":")[0] for r in out.refused] == [
        "duplicate_key",
        "text_field",
        "too_large",
    ]
    # ... and what is filed of them is redacted like every dead letter
    assert all(b"hello" not in redact(r.evidence) for r in out.refused)
