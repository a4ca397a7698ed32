"""Bounce and complaint events: what a report says, and `record()`, which stores and applies it.

A provider webhook, the mailbox fetcher and the tests all build a BounceEvent and call
`record()`; it finds the delivery or subscriber the event names, keeps the event with its raw
reason and changes the subscriber: a hard bounce suppresses at once, soft bounces past the
threshold within the window suppress, a complaint unsubscribes at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from newsletter import storage
from newsletter.bounces import verp
from newsletter.config import Settings
from newsletter.mail.addresses import sender_domain
from newsletter.models import BOUNCING, COMPLAINT, DELAYED, HARD, SOFT, UNSUBSCRIBED, Subscriber

Kind = Literal["hard", "soft", "complaint", "delayed"]
# What record() did: suppressed (bouncing now), counted (a soft bounce under the threshold),
# unsubscribed (a complaint), warning (a delay: nothing), already (suppressed before),
# forged (a VERP address with a wrong signature), unknown (names nobody we mailed).
# duplicate (this report was recorded before).
Outcome = Literal[
    "suppressed", "counted", "unsubscribed", "warning", "already", "forged", "unknown", "duplicate"
]

# How far back an address alone (no VERP, no Message-ID of ours) may name a sent digest.
ADDRESS_LOOKBACK = timedelta(days=30)
_MESSAGE_ID = re.compile(r"^<?digest\.(?P<edition>\d{8})\.(?P<id>\d{1,18})@(?P<domain>[^>\s]+)>?$")


class ReportError(ValueError):
    """A message that is neither a delivery status notification nor a feedback report."""


@dataclass(frozen=True, slots=True)
class BounceEvent:
    """One recipient's bounce, delay or complaint, as reported.

    `verp` is a VERP-looking address found in the report (checked by record(), never
    trusted as is); `message_id` the original message's Message-ID; `recipient` the address
    the report names ("" when redacted); `status` the enhanced status code (5.1.1) or the
    feedback type (abuse); `reason` the raw diagnostic text.
    """

    kind: Kind
    recipient: str = ""
    status: str = ""
    reason: str = ""
    verp: str | None = None
    message_id: str | None = None
    source: str = "dsn"
    # The report's own identity (a mailbox message's digest, a webhook's event id): the same
    # report recorded twice stores and changes nothing the second time.
    report_key: str | None = None


def address_hash(settings: Settings, address: str) -> str:
    """The suppression key of an address: an HMAC of it, case-folded, with the secret key."""
    assert settings.secret_key, "load_settings() always sets a secret key"
    canonical = address.strip().casefold().encode("utf-8")
    key = settings.secret_key.encode() + b":suppression"
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def record(
    session: Session, settings: Settings, event: BounceEvent, now: datetime | None = None
) -> Outcome:
    """Store the event with its raw reason and apply it to the subscriber it names.

    Flushes, never commits: the caller commits (and only then deletes the report it came
    from). A forged or unknown event is stored and changes nothing else.
    """
    now = now or storage.utcnow()
    if event.report_key and storage.bounce_event_seen(
        session, event.report_key, event.recipient, event.kind
    ):
        return "duplicate"
    outcome, subscriber, delivery_id = _resolve(session, settings, event, now)
    if subscriber is not None and outcome is None:
        outcome = _apply(session, settings, subscriber, event, now)
    final: Outcome = outcome or "unknown"
    storage.add_bounce_event(
        session,
        subscriber_id=subscriber.id if subscriber is not None else None,
        delivery_id=delivery_id,
        kind=event.kind,
        status=event.status[:32],
        recipient=(subscriber.email if subscriber is not None else event.recipient)[:320],
        reason=event.reason[:4000],
        source=event.source[:32],
        report_key=event.report_key,
        reported_recipient=event.recipient[:320],
        outcome=final,
        received_at=now,
    )
    return final


def _resolve(
    session: Session, settings: Settings, event: BounceEvent, now: datetime
) -> tuple[Outcome | None, Subscriber | None, int | None]:
    """(forged/unknown or None, the subscriber, the delivery id) the event names."""
    if event.verp and _ours(settings, event.verp):
        delivery_id = verp.delivery_of(settings, event.verp)
        if delivery_id is None:
            return "forged", None, None
        found = storage.subscriber_of_delivery(session, delivery_id)
        return (None, found, delivery_id) if found else ("unknown", None, delivery_id)
    if event.message_id:
        delivery_id = _our_delivery(settings, event.message_id)
        if delivery_id is not None:
            found = storage.subscriber_of_delivery(session, delivery_id, sent_only=True)
            recipient = event.recipient.casefold()
            # The recipient, when the report names one, must be the one we sent it to.
            if found and (not recipient or recipient == found.email.casefold()):
                return None, found, delivery_id
    if event.recipient and not settings.bounce_address:
        # Without VERP a report can only name its recipient; believed only for an address
        # that was sent a digest lately. With VERP on, every bounce of ours names its row.
        found = storage.recently_sent_subscriber(
            session, event.recipient.casefold(), now - ADDRESS_LOOKBACK
        )
        if found:
            return None, found, None
    return "unknown", None, None


def _ours(settings: Settings, address: str) -> bool:
    if not settings.bounce_address:
        return False
    local, _, domain = address.lower().rpartition("@")
    base_local, _, base_domain = settings.bounce_address.lower().rpartition("@")
    return domain == base_domain and local.split("+", 1)[0] == base_local


def _our_delivery(settings: Settings, message_id: str) -> int | None:
    found = _MESSAGE_ID.match(message_id.strip())
    if not found or found["domain"].lower() != sender_domain(settings.from_address).lower():
        return None
    return int(found["id"])


def _apply(
    session: Session, settings: Settings, subscriber: Subscriber, event: BounceEvent, now: datetime
) -> Outcome:
    if event.kind == DELAYED:
        return "warning"
    if event.kind == COMPLAINT:
        from newsletter import subscriptions

        suppress(session, settings, subscriber.email, COMPLAINT, event.status, now)
        if subscriber.state == UNSUBSCRIBED:
            return "already"
        subscriptions.unsubscribe(session, subscriber, now)
        return "unsubscribed"
    if subscriber.state in (BOUNCING, UNSUBSCRIBED):
        return "already"
    if event.kind == SOFT:
        since = now - timedelta(days=settings.soft_bounce_days)
        # This event is not stored yet: it is the one more.
        count = storage.count_bounce_events(session, subscriber.id, SOFT, since) + 1
        if count < settings.soft_bounce_threshold:
            return "counted"
    assert event.kind in (HARD, SOFT)
    suppress(session, settings, subscriber.email, event.kind, event.status, now)
    storage.mark_bouncing(session, subscriber)
    return "suppressed"


def suppress(
    session: Session, settings: Settings, address: str, reason: str, detail: str, now: datetime
) -> None:
    """Put an address on the suppression list (kept if already there)."""
    storage.add_suppression(session, address_hash(settings, address), reason, detail[:200], now)


def is_suppressed(session: Session, settings: Settings, address: str) -> bool:
    """Whether an address is on the suppression list."""
    return storage.suppression(session, address_hash(settings, address)) is not None


def lift(session: Session, settings: Settings, address: str) -> bool:
    """Take an address off the suppression list; False if it was not on it."""
    return storage.remove_suppression(session, address_hash(settings, address))
