"""The sign-up confirmation mail: a signed confirm link; newsletter.confirmations sends it."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid

from newsletter import storage, subscriptions, tokens
from newsletter.config import Settings
from newsletter.mail import build_message, open_transport, sender_domain
from newsletter.models import Subscriber
from newsletter.render import render_confirmation


def send_confirmation(
    settings: Settings, subscriber: Subscriber, *, now: datetime | None = None
) -> None:
    """Render and send the double opt-in mail, then stamp `confirm_sent_at`.

    The link is valid for `confirm_hours`. Raises newsletter.mail.SendError if the mail was
    not accepted; the stamp is then left as it was. The caller commits the stamp.
    """
    confirm_url = tokens.link(settings, "confirm", subscriber.id, subscriber.link_key)
    email = render_confirmation(settings, email=subscriber.email, confirm_url=confirm_url)
    message = build_message(
        email,
        sender=settings.from_address,
        recipient=subscriber.email,
        message_id=make_msgid("confirm", domain=sender_domain(settings.from_address)),
        bulk=False,  # a one-off mail the person asked for: no List-Unsubscribe
    )
    with open_transport(settings) as transport:
        transport.send(message)
    subscriptions.confirmation_sent(subscriber, now or storage.utcnow())
