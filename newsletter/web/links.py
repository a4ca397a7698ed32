"""Signed links on the pages: from a token in the URL to its subscriber, or a clear refusal."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from newsletter import storage, tokens
from newsletter.config import Settings
from newsletter.models import Subscriber
from newsletter.tokens import Purpose, TokenError


class LinkError(Exception):
    """A link that cannot be used: 400 forged or for another page, 410 expired or revoked."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def forged() -> LinkError:
    return LinkError(
        400,
        "This link is not valid",
        "It may have been cut short or changed on the way, or it belongs to another page. "
        "Open the link from the email again, or sign up again for a new one.",
    )


def expired() -> LinkError:
    return LinkError(
        410,
        "This link has expired",
        "Confirmation links are valid for a limited time. Sign up again to get a new one.",
    )


def revoked() -> LinkError:
    # The same answer whatever the reason (an unsubscribe, a new sign-up, a deleted
    # subscription): the page must not tell a stranger anything about the address.
    return LinkError(
        410,
        "This link is no longer valid",
        "Links stop working once you unsubscribe, when you subscribe again (your new emails "
        "carry new links) and when a subscription is removed. If you unsubscribed, nothing more "
        "will be sent. Use the links in your most recent email, or sign up again on the home page.",
    )


def subscriber_for(
    session: Session, settings: Settings, purpose: Purpose, token: str
) -> Subscriber:
    """The subscriber a link was made for, or LinkError; nothing is changed either way."""
    try:
        subscriber_id, key = tokens.read_token(settings, purpose, token)
    except TokenError as exc:
        if exc.legacy is not None:
            return _legacy_subscriber(session, exc.legacy, now=storage.utcnow())
        raise (expired() if exc.expired else forged()) from None
    subscriber = storage.subscriber_by_id(session, subscriber_id)
    # The id only finds the row; the key proves the link was made for this row's owner since
    # their last unsubscribe or return (a deleted row's id may belong to someone else now).
    if subscriber is None or not hmac.compare_digest(subscriber.link_key, key):
        raise revoked()
    return subscriber


def _legacy_subscriber(session: Session, link: tokens.LegacyLink, *, now: datetime) -> Subscriber:
    """The subscriber of a link signed before link keys, if it can only have been theirs.

    Such links carried the row id and a version that never changed, so they are honoured only
    while the row keeps the key the migration gave it (no unsubscribe or return since) and only
    for the version that key records, only
    if signed since the row's latest sign-up, confirmation or unsubscribe (a deleted row's
    links were signed before its id was given again), and for LEGACY_LINK_DAYS at most.
    """
    if now - link.signed_at > timedelta(days=tokens.LEGACY_LINK_DAYS):
        raise revoked()
    subscriber = storage.subscriber_by_id(session, link.subscriber_id)
    if subscriber is None or tokens.legacy_version(subscriber.link_key) != link.version:
        raise revoked()
    events = (subscriber.created_at, subscriber.confirmed_at, subscriber.unsubscribed_at)
    latest = max(moment for moment in events if moment is not None)
    # Signing times are whole seconds; the row's times are not.
    if link.signed_at < latest.replace(microsecond=0):
        raise revoked()
    return subscriber


def token_for(settings: Settings, purpose: Purpose, subscriber: Subscriber) -> str:
    """A fresh signed token of `purpose` for the subscriber's current link key."""
    return tokens.make_token(settings, purpose, subscriber.id, subscriber.link_key)
