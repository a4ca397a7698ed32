"""Log redaction: no signed token survives in a logged line, whatever carries it."""

from __future__ import annotations

import logging

from newsletter import logs, tokens


def test_tokens_in_paths_queries_and_tracebacks_are_redacted(settings, caplog):
    token = tokens.make_token(settings, "manage", 7, 1)
    timed = tokens.make_token(settings, "confirm", 7, 1)
    handler = logging.StreamHandler()
    records: list[str] = []
    handler.emit = lambda record: records.append(handler.format(record))  # type: ignore[method-assign]
    handler.addFilter(logs.RedactTokens())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    try:
        log.warning(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/manage/{token}/pause", "1.1", 200
        )
        log.warning("opened /rate/abc-def?x=1 and /view/xyz")
        log.warning("a link %s in a query", f"https://d.example/x?t={timed}&a=1")
        try:
            raise ValueError(f"bad link /confirm/{timed}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = "\n".join(records)
    assert token not in text and timed not in text
    assert '"GET /manage/…/pause HTTP/1.1" 200' in records[0]
    assert records[1] == "opened /rate/…?x=1 and /view/…"
    assert "x?t=…&a=1" in records[2]
    assert "ValueError: bad link /confirm/…" in records[3]


def test_ordinary_lines_are_left_alone():
    for line in (
        "collect hf_daily: 42 new papers from https://huggingface.co/api/daily_papers",
        "newsletter.web.health: database at sqlite:///var/newsletter.db",
        "deliver: 3 sent, 0 to retry, 0 failed (digest.20261201.1@localhost)",
    ):
        assert logs.redact(line) == line
