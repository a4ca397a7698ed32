"""Subscriber lifecycle for the web pages and the CLI: sign up, confirm, unsubscribe, delete."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.orm import Session

from newsletter import storage
from newsletter.config import Settings
from newsletter.models import ACTIVE, BOUNCING, PAUSED, PENDING, UNSUBSCRIBED, Subscriber
from newsletter.tokens import new_link_key


class SubscriptionError(ValueError):
    """Bad input from a subscriber or operator; `field` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_email(raw: str) -> str:
    """A syntactically valid address, normalized (lower-case domain); no DNS lookups."""
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriptionError("email", f"{raw.strip() or 'An empty address'}: {exc}") from None
    return str(result.normalized).lower()


def validate_keywords(text: str) -> str:
    """Check a keyword profile; returns it stripped, or raises with what and where."""
    text = text.strip()
    if not text:
        raise SubscriptionError("keywords", "Enter at least one keyword.")
    from newsletter.profile import ProfileError, parse_profile

    try:
        parse_profile(text)
    except ProfileError as exc:
        raise SubscriptionError("keywords", str(exc)) from None
    return text


def validate_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriptionError("timezone", f"Unknown time zone {name!r}.") from None
    return name


def validate_send_hour(hour: int) -> int:
    if not 0 <= hour <= 23:
        raise SubscriptionError("send_hour", "The send hour must be from 0 to 23.")
    return hour


def validate_digest_size(size: int) -> int:
    if not 1 <= size <= 50:
        raise SubscriptionError("digest_size", "The digest size must be from 1 to 50 papers.")
    return size


def subscribe(
    session: Session,
    settings: Settings,
    *,
    email: str,
    keywords: str,
    now: datetime,
    timezone: str | None = None,
    send_hour: int | None = None,
    digest_size: int | None = None,
    confirmed: bool = False,
) -> Subscriber:
    """Add a subscriber (pending until confirmed, or active when an operator adds them).

    Every value is validated before anything is written. An unconfirmed sign-up never changes
    what a known address has stored: for a pending, unsubscribed or bouncing one, what was
    typed waits in `pending_preferences` until its owner confirms (see confirm()); an active
    or paused one is changed only by its owner, through a signed link. An operator cannot add
    an address on the suppression list (it bounced or complained): SubscriptionError.
    """
    address = normalize_email(email)
    profile = validate_keywords(keywords)
    # Only a missing value takes the default: 0 papers or an empty zone is an error.
    zone = validate_timezone(settings.timezone if timezone is None else timezone)
    hour = validate_send_hour(settings.send_hour if send_hour is None else send_hour)
    size = validate_digest_size(settings.digest_size if digest_size is None else digest_size)
    if confirmed and _suppressed(session, settings, address):
        # It bounced or its owner called it spam: only the owner, confirming a mail sent
        # from now on, brings it back; an operator's list may be old.
        raise SubscriptionError(
            "email",
            f"{address} is on the suppression list (it bounced or complained); it comes back "
            "only when its owner signs up and confirms (or after `newsletter suppressions "
            "remove`).",
        )
    subscriber = storage.subscriber_by_email(session, address)
    if subscriber is None:
        subscriber = storage.add_subscriber(
            session,
            email=address,
            state=PENDING,
            keywords=profile,
            timezone=zone,
            send_hour=hour,
            digest_size=size,
            created_at=now,
        )
    elif confirmed:  # an operator's word is final
        subscriber.keywords, subscriber.timezone = profile, zone
        subscriber.send_hour, subscriber.digest_size = hour, size
        subscriber.pending_preferences = None
    elif subscriber.state in (PENDING, UNSUBSCRIBED, BOUNCING):
        # Someone coming back after unsubscribing gets what they just typed once they confirm;
        # until then anybody could have typed it, so the stored settings stay as they are.
        subscriber.pending_preferences = {
            "keywords": profile,
            "timezone": zone,
            "send_hour": hour,
            "digest_size": size,
        }
    if confirmed:
        confirm(session, subscriber, now)
    return subscriber


def _suppressed(session: Session, settings: Settings, address: str) -> bool:
    from newsletter.bounces.events import is_suppressed

    return is_suppressed(session, settings, address)


def confirm(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Activate a pending, unsubscribed or bouncing subscriber who confirmed; harmless if active.

    Someone coming back after unsubscribing gets a new link key: the links of the mails and
    pages they saw before (the confirmation they just used included) no longer work.
    """
    if subscriber.state not in (ACTIVE, PAUSED):
        if subscriber.state == UNSUBSCRIBED:
            subscriber.link_key = new_link_key()
        _apply_pending_preferences(subscriber)
        subscriber.state = ACTIVE
        subscriber.confirmed_at = now
        subscriber.unsubscribed_at = None
        subscriber.hard_failures = 0
    session.flush()


def _apply_pending_preferences(subscriber: Subscriber) -> None:
    """What the last sign-up typed becomes the subscriber's settings, now that they confirm."""
    pending = subscriber.pending_preferences
    subscriber.pending_preferences = None
    if not pending:
        return
    try:  # typed and checked at sign-up; checked again in case a time zone went away since
        values = (
            validate_keywords(str(pending["keywords"])),
            validate_timezone(str(pending["timezone"])),
            validate_send_hour(int(pending["send_hour"])),
            validate_digest_size(int(pending["digest_size"])),
        )
    except (KeyError, TypeError, ValueError):
        return  # keep what was stored, all of it: a confirmation never fails on these
    subscriber.keywords, subscriber.timezone, subscriber.send_hour, subscriber.digest_size = values


def unsubscribe(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Stop all mail at once and revoke every link issued so far; repeating it changes nothing.

    The new key is in no mail: only a page shown right now (the "subscribe again" button) or a
    confirmation mailed later carries it.
    """
    if subscriber.state != UNSUBSCRIBED:
        subscriber.state = UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        subscriber.link_key = new_link_key()
        storage.cancel_for_subscriber(session, subscriber.id)
    session.flush()


def delete(session: Session, subscriber: Subscriber) -> int:
    """Remove the subscriber and their ledger rows (operator only); returns the ledger rows.

    Their links die with the row: a later sign-up may get the same id on SQLite, never the
    same link key.
    """
    session.flush()
    session.expunge(subscriber)
    return storage.delete_subscriber(session, subscriber.id)


def pause(session: Session, subscriber: Subscriber) -> None:
    """Stop the digests of an active subscriber for now, including any already planned."""
    if subscriber.state == ACTIVE:
        subscriber.state = PAUSED
        storage.cancel_for_subscriber(session, subscriber.id)
    session.flush()


def resume(session: Session, subscriber: Subscriber, now: datetime) -> None:
    """Start the digests again after a pause, an unsubscribe or bounces; harmless if active."""
    if subscriber.state == PAUSED:
        subscriber.state = ACTIVE
        session.flush()
    else:
        confirm(session, subscriber, now)
