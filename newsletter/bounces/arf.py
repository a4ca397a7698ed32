"""Feedback-loop reports (ARF, RFC 5965): a recipient marked our mail as spam.

`parse(raw)` is pure: complaint events naming the original's VERP address, Message-ID and
recipient where the report keeps them (AOL redacts the recipient, Yahoo gives the envelope).
"""

from __future__ import annotations

from email.message import Message

from newsletter.bounces.events import BounceEvent, ReportError
from newsletter.bounces.report import (
    bare_address,
    find_verp,
    original_headers,
    original_message_id,
    read,
)

# RFC 5965 3.5 feedback types that mean "the recipient did not want this". not-spam,
# auth-failure and the like are about something else and change nothing.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
_REDACTED = ("redacted", "xxxx", "****")


def is_feedback_report(raw: bytes) -> bool:
    """Whether a message carries a message/feedback-report part."""
    return _report_part(read(raw)) is not None


def parse(raw: bytes) -> list[BounceEvent]:
    """The complaint a feedback report makes ([] for a type that is no complaint)."""
    message = read(raw)
    part = _report_part(message)
    if part is None:
        raise ReportError("not a feedback report: no message/feedback-report part")
    fields = _fields(part)
    feedback_type = str(fields.get("Feedback-Type") or "").strip().lower()
    if feedback_type and feedback_type not in COMPLAINT_TYPES:
        return []
    original = original_headers(message)
    recipient = bare_address(str(fields.get("Original-Rcpt-To") or ""))
    if not recipient and original is not None:
        recipient = bare_address(str(original.get("To") or ""))
    if recipient.split("@", 1)[0] in _REDACTED:
        recipient = ""  # a redacted address names nobody; the Message-ID still may
    envelope = str(fields.get("Original-Mail-From") or "")
    return [
        BounceEvent(
            kind="complaint",
            recipient=recipient,
            status=feedback_type or "abuse",
            reason=" ".join(f"{k}: {v}" for k, v in fields.items() if k != "Content-Type")[:4000],
            verp=find_verp(message, envelope),
            message_id=original_message_id(message),
            source="arf",
        )
    ]


def _report_part(message: Message) -> Message | None:
    return next(
        (p for p in message.walk() if p.get_content_type() == "message/feedback-report"), None
    )


def _fields(part: Message) -> Message:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    from email.parser import HeaderParser

    return HeaderParser().parsestr(str(payload))
