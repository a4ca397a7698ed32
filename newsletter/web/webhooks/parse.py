"""Each provider's documented webhook body -> BounceEvents: pure, no I/O, no trust decided here."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from newsletter.bounces import BounceEvent
from newsletter.bounces.events import Kind
from newsletter.mail.message import message_id_for


class PayloadError(ValueError):
    """A body that is not the provider's documented shape."""


def json_body(body: bytes) -> Any:
    """The body as JSON, or PayloadError."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"the body is not JSON: {error}") from None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def ses_events(message: dict[str, Any]) -> list[BounceEvent]:
    """An SES notification (the SNS Message, parsed): Bounce, Complaint; others ignored."""
    kind_of = _text(message.get("notificationType") or message.get("eventType"))
    headers = _dict(_dict(message, "mail"), "commonHeaders")
    message_id = _text(headers.get("messageId")) or None
    if kind_of == "Bounce":
        bounce = _dict(message, "bounce")
        # Undetermined: SES could not tell; counted as soft, never suppressing at once.
        kind: Kind = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        return [
            BounceEvent(
                kind=kind,
                recipient=_text(item.get("emailAddress")),
                status=_text(item.get("status")),
                reason=_text(item.get("diagnosticCode"))
                or f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}",
                message_id=message_id,
                source="ses",
                report_key=_text(bounce.get("feedbackId")) or None,
            )
            for item in _list(bounce, "bouncedRecipients")
        ]
    if kind_of == "Complaint":
        complaint = _dict(message, "complaint")
        return [
            BounceEvent(
                kind="complaint",
                recipient=_text(item.get("emailAddress")),
                status=_text(complaint.get("complaintFeedbackType")) or "abuse",
                reason=_text(complaint.get("complaintFeedbackType")) or "complaint",
                message_id=message_id,
                source="ses",
                report_key=_text(complaint.get("feedbackId")) or None,
            )
            for item in _list(complaint, "complainedRecipients")
        ]
    return []


# Postmark's bounce Type names: which suppress at once, which count as soft.
_POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "Blocked", "ManuallyDeactivated"}
_POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError", "AutoResponder"}


def postmark_events(body: Any) -> list[BounceEvent]:
    """A Postmark Bounce or SpamComplaint webhook; other record types are ignored."""
    if not isinstance(body, dict):
        raise PayloadError("a Postmark webhook body is a JSON object")
    record_type = _text(body.get("RecordType"))
    bounce_type = _text(body.get("Type"))
    kind: Kind
    if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
        kind = "complaint"
    elif bounce_type in _POSTMARK_HARD:
        kind = "hard"
    elif bounce_type in _POSTMARK_SOFT:
        kind = "soft"
    else:
        return []
    return [
        BounceEvent(
            kind=kind,
            recipient=_text(body.get("Email")),
            status=bounce_type,
            reason=_text(body.get("Details")) or _text(body.get("Description")),
            source="postmark",
            report_key=f"postmark:{body.get('ID')}" if body.get("ID") is not None else None,
        )
    ]


def sendgrid_events(body: Any) -> list[BounceEvent]:
    """A SendGrid Event Webhook batch: bounce (blocked is soft), spamreport; others ignored."""
    if not isinstance(body, list):
        raise PayloadError("a SendGrid event webhook body is a JSON array")
    events = []
    for item in body:
        if not isinstance(item, dict):
            raise PayloadError("a SendGrid event is a JSON object")
        name = item.get("event")
        kind: Kind
        if name == "bounce":
            kind = "soft" if item.get("type") == "blocked" else "hard"
        elif name == "spamreport":
            kind = "complaint"
        else:
            continue
        events.append(
            BounceEvent(
                kind=kind,
                recipient=_text(item.get("email")),
                status=_text(item.get("status")) or name,
                reason=_text(item.get("reason")) or name,
                message_id=_text(item.get("smtp-id")) or None,
                source="sendgrid",
                report_key=_text(item.get("sg_event_id")) or None,
            )
        )
    return events


def mailgun_events(event: dict[str, Any]) -> list[BounceEvent]:
    """Mailgun's event-data: failed (permanent or temporary), complained; others ignored."""
    name = event.get("event")
    status = _dict(event, "delivery-status")
    kind: Kind
    if name == "failed":
        kind = "hard" if event.get("severity") == "permanent" else "soft"
    elif name == "complained":
        kind = "complaint"
    else:
        return []
    headers = _dict(_dict(event, "message"), "headers")
    return [
        BounceEvent(
            kind=kind,
            recipient=_text(event.get("recipient")),
            status=_text(status.get("code")) or _text(event.get("reason")),
            reason=_text(status.get("message")) or _text(status.get("description")) or name,
            message_id=_text(headers.get("message-id")) or None,
            source="mailgun",
            report_key=_text(event.get("id")) or None,
        )
    ]


def generic_events(body: Any, sender_domain: str) -> list[BounceEvent]:
    """{"email"|"message_id"|"delivery_id", "kind": hard|soft|complaint, "reason", "id"?}."""
    if not isinstance(body, dict):
        raise PayloadError("the body is a JSON object")
    kind = body.get("kind")
    if kind not in ("hard", "soft", "complaint"):
        raise PayloadError('"kind" is one of hard, soft, complaint')
    email, message_id, delivery_id = (
        body.get("email"),
        body.get("message_id"),
        body.get("delivery_id"),
    )
    if not any(isinstance(v, str) and v for v in (email, message_id)) and not (
        isinstance(delivery_id, int) and not isinstance(delivery_id, bool)
    ):
        raise PayloadError('one of "email", "message_id" (strings), "delivery_id" (an integer)')
    if isinstance(delivery_id, int) and not isinstance(delivery_id, bool) and not message_id:
        # Our own Message-ID names its delivery (record() checks the row was sent, and to
        # whom when an email is given too); the edition part is not what identifies it.
        message_id = message_id_for(delivery_id, date(2000, 1, 1), sender_domain)
    return [
        BounceEvent(
            kind=kind,
            recipient=_text(email),
            status=_text(body.get("status")) or kind,
            reason=_text(body.get("reason")) or kind,
            message_id=_text(message_id) or None,
            source="webhook",
            report_key=f"webhook:{body['id']}" if body.get("id") else None,
        )
    ]


def _dict(value: dict[str, Any], key: str) -> dict[str, Any]:
    found = value.get(key)
    return found if isinstance(found, dict) else {}


def _list(value: dict[str, Any], key: str) -> list[dict[str, Any]]:
    found = value.get(key)
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
