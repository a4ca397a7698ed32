"""Delivery status notifications: RFC 3464 reports and the common non-standard bodies.

`parse(raw)` is pure: a list of BounceEvents, one per recipient reported; a delay (RFC 3464
Action: delayed, "still being retried") is a warning, never a bounce. Raises ReportError for
a message that is not a DSN at all.
"""

from __future__ import annotations

import re
from email.message import Message

from newsletter.bounces.events import BounceEvent, Kind, ReportError
from newsletter.bounces.report import (
    bare_address,
    find_verp,
    original_message_id,
    read,
    text_of,
)

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")
# A full mailbox is permanent by its code (5.2.2) but temporary in practice (RFC 3463: "the
# mailbox is full"; it empties): counted as soft, as listmonk and the big senders do.
_SOFT_PERMANENT = frozenset({"5.2.2"})
_FULL = re.compile(r"mailbox (is )?full|over quota|quota exceeded|insufficient storage", re.I)
_DELAYED_TEXT = re.compile(
    r"still being retried|will be retried|warning only|delayed mail|delivery delayed|"
    r"has not yet been delivered|do not need to resend",
    re.I,
)
_PERMANENT_TEXT = re.compile(r"failed permanently|permanent (error|failure)|undeliverable", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned mail|delivery (status notification|failure)|failure notice|"
    r"mail delivery failed|delivery has failed|could not be delivered|delayed mail",
    re.I,
)
# Postfix and qmail bodies: "<user@example.com>: host mx said: 550 5.1.1 ..." per recipient.
_QUOTED_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.M | re.I)
_RECIPIENT_LINE = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:?\s*(.*)$", re.M)


def parse(raw: bytes) -> list[BounceEvent]:
    """The bounce events a DSN reports, one per recipient (delays as kind "delayed")."""
    message = read(raw)
    events = _standard(message)
    if events is None:
        events = _plain(message)
    return events


def classify(action: str, status: str, diagnostic: str) -> Kind | None:
    """hard, soft or delayed for one recipient's report; None if it was delivered."""
    action = action.strip().lower()
    if action in ("delivered", "relayed", "expanded"):
        return None
    if action == "delayed":
        return "delayed"  # RFC 3464 2.3.3: a warning, the relay keeps trying
    code = _STATUS.search(status) or _STATUS.search(diagnostic)
    if code:
        if code.group(1) == "2":
            return None
        if code.group(1) == "4":
            return "soft"  # a temporary error the relay gave up on: count it, do not condemn
        if code.group(0) in _SOFT_PERMANENT or _FULL.search(diagnostic):
            return "soft"
        return "hard"
    smtp = _SMTP_CODE.search(diagnostic)
    if smtp and smtp.group(1) == "5" and not _FULL.search(diagnostic):
        return "hard"
    return "soft"  # failed for a reason nobody coded: counted, suppressed only if it repeats


def _standard(message: Message) -> list[BounceEvent] | None:
    """Events of a message/delivery-status part; None when the message has none."""
    report = next(
        (p for p in message.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if report is None:
        return None
    blocks = report.get_payload()
    if not isinstance(blocks, list):
        return None
    verp, message_id = find_verp(message), original_message_id(message)
    events: list[BounceEvent] = []
    for block in blocks:
        if not isinstance(block, Message):
            continue
        recipient = bare_address(str(block.get("Final-Recipient") or ""))
        recipient = recipient or bare_address(str(block.get("Original-Recipient") or ""))
        action = str(block.get("Action") or "")
        if not recipient or not action:
            continue  # the per-message block, or a recipient block without what we need
        status = str(block.get("Status") or "").strip()
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
        kind = classify(action, status, diagnostic)
        if kind is None:
            continue
        code = _STATUS.search(status)
        events.append(
            BounceEvent(
                kind=kind,
                recipient=recipient,
                status=code.group(0) if code else status[:32],
                reason=diagnostic or f"Action: {action}; Status: {status}",
                verp=verp,
                message_id=message_id,
                source="dsn",
            )
        )
    if not events and not any(isinstance(b, Message) and b.get("Action") for b in blocks):
        raise ReportError("a delivery-status report without any recipient's Action")
    return events


def _plain(message: Message) -> list[BounceEvent]:
    """Events of a text-only bounce (Gmail, Postfix, qmail); ReportError if it is not one."""
    subject = str(message.get("Subject") or "")
    sender = str(message.get("From") or "").lower()
    body = "\n".join(text_of(p) for p in message.walk() if p.get_content_type() == "text/plain")
    from_daemon = "mailer-daemon" in sender or "postmaster" in sender
    if not (from_daemon or _BOUNCE_SUBJECT.search(subject)):
        raise ReportError("not a bounce: no delivery-status report, not from a mail system")
    notice = body.split("----- Original message -----", 1)[0]
    delayed = bool(_DELAYED_TEXT.search(subject) or _DELAYED_TEXT.search(notice))
    recipients = _plain_recipients(message, notice)
    if not recipients:
        raise ReportError("a bounce that names no recipient")
    verp, message_id = find_verp(message, body), original_message_id(message)
    quoted = _QUOTED_MESSAGE_ID.search(body.split("----- Original message -----", 1)[-1])
    if message_id is None and quoted and "----- Original message -----" in body:
        message_id = quoted.group(1)  # Gmail quotes the original's headers in its text
    events = []
    for recipient, detail in recipients:
        reason = " ".join(detail.split()) or _first_code_line(notice)
        if delayed:
            kind: Kind = "delayed"
        elif _PERMANENT_TEXT.search(notice) and not _STATUS.search(reason):
            kind = "hard"
        else:
            kind = classify("failed", "", reason) or "soft"
        code = _STATUS.search(reason)
        events.append(
            BounceEvent(
                kind=kind,
                recipient=recipient,
                status=code.group(0) if code else "",
                reason=reason[:4000],
                verp=verp,
                message_id=message_id,
                source="dsn",
            )
        )
    return events


def _plain_recipients(message: Message, notice: str) -> list[tuple[str, str]]:
    """(address, what was said about it): X-Failed-Recipients, else "<a@b>: ..." lines."""
    failed = [bare_address(a) for a in str(message.get("X-Failed-Recipients") or "").split(",")]
    failed = [a for a in failed if a]
    if failed:
        reason = _first_code_line(notice)
        return [(address, reason) for address in failed]
    found: list[tuple[str, str]] = []
    for match in _RECIPIENT_LINE.finditer(notice):
        # The reason may go on over the indented lines that follow.
        rest = notice[match.end() :].split("\n")
        more = []
        for line in rest[1:]:
            if not line.startswith((" ", "\t")) or not line.strip():
                break
            more.append(line.strip())
        found.append((match.group(1).lower(), " ".join([match.group(2), *more])))
    return found


def _first_code_line(notice: str) -> str:
    for line in notice.splitlines():
        if _STATUS.search(line) or _SMTP_CODE.match(line.strip()):
            return line.strip()
    return ""
