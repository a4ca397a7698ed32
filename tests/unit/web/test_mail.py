"""The confirmation mail: sent to a real SMTP server, a confirm link, no list headers."""

from __future__ import annotations

import pytest

from newsletter import storage, tokens
from newsletter.mail import SendError
from newsletter.web.mail import send_confirmation


def _pending(db, settings):
    from newsletter import subscriptions

    with db.session() as session:
        return subscriptions.subscribe(
            session, settings, email="ada@example.org", keywords="diffusion", now=storage.utcnow()
        )


def test_the_mail_carries_a_confirm_link_and_is_stamped(settings, db, smtp_server):
    settings = settings.model_copy(update={"smtp_url": smtp_server.url})
    subscriber = _pending(db, settings)
    now = storage.utcnow()
    send_confirmation(settings, subscriber, now=now)
    assert subscriber.confirm_sent_at == now
    [message] = smtp_server.to("ada@example.org")
    assert "Confirm" in message["Subject"]
    assert message["List-Unsubscribe"] is None and message["Precedence"] is None
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@localhost>")
    text = message.get_body(("plain",)).get_content()
    token = text.split(f"{settings.base_url}/confirm/", 1)[1].split()[0]
    assert tokens.read_token(settings, "confirm", token) == (subscriber.id, subscriber.link_key)
    assert f"/confirm/{token}" in message.get_body(("html",)).get_content()


def test_a_refused_mail_raises_and_is_not_stamped(settings, db, smtp_server):
    settings = settings.model_copy(update={"smtp_url": smtp_server.url})
    smtp_server.reply_for["ada@example.org"] = "550 No such user"
    subscriber = _pending(db, settings)
    with pytest.raises(SendError):
        send_confirmation(settings, subscriber)
    assert subscriber.confirm_sent_at is None
