"""Logging: one format for every logger, and no working link in any line written."""

from __future__ import annotations

import logging
import re

REDACTED = "…"
# The pages whose path carries a signed token (rate, view-in-browser and feed links included).
_TOKEN_PATH = re.compile(r"(/(?:confirm|manage|unsubscribe|rate|view|digest|feed)/)[^/?#\s\"']+")
# Any itsdangerous token, wherever it appears (a query string, a referrer, an error message):
# payload[.timestamp].signature, the signature 27 characters of URL-safe base64 at least.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]{4,8})?\.[A-Za-z0-9_-]{27,}")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """`text` with every signed token replaced by "…" (a logged link must not work)."""
    return _TOKEN_SHAPE.sub(REDACTED, _TOKEN_PATH.sub(rf"\1{REDACTED}", text))


class RedactTokens(logging.Filter):
    """A handler filter: the record's message (and traceback) with the tokens taken out.

    On the handler, not a logger, so it sees every record that reaches it, uvicorn's access
    lines included. The message is formatted here once and its arguments dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction() -> None:
    """Put the token filter on every handler of the root logger (once each)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())


def configure(verbose: bool = False) -> None:
    """Log to stderr in one format, tokens redacted; quiet the chatty libraries."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    install_redaction()
    # Retries and scheduler bookkeeping are for --verbose; a source that stays down is still
    # reported, once, by the pipeline.
    quiet = ("httpx", "httpcore", "apscheduler", "alembic.runtime", "newsletter.sources")
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
