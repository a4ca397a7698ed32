"""A bounced or complained address comes back from the web only by a fresh confirmation."""

from __future__ import annotations

from datetime import timedelta

from newsletter import storage, subscriptions
from newsletter.bounces import BounceEvent, record
from newsletter.bounces.events import is_suppressed
from newsletter.models import ACTIVE, BOUNCING, SENT, UNSUBSCRIBED, Delivery


def was_sent(w, subscriber_id: int) -> None:
    now = storage.utcnow()
    with w.db.session() as session:
        session.add(
            Delivery(
                subscriber_id=subscriber_id,
                edition=now.date(),
                state=SENT,
                items=[],
                created_at=now - timedelta(hours=1),
                sent_at=now,
            )
        )


def report(w, kind: str, email: str) -> str:
    event = BounceEvent(kind=kind, recipient=email, status="5.1.1", reason="550 5.1.1 gone")
    with w.db.session() as session:
        return record(session, w.settings, event)


def suppressed(w, email: str) -> bool:
    with w.db.session() as session:
        return is_suppressed(session, w.settings, email)


def test_a_bounced_subscriber_is_back_only_through_a_confirmation_mailed_after(w, outbox):
    subscriber_id = w.add("ada@example.org")
    old_manage = w.path("manage", subscriber_id)
    was_sent(w, subscriber_id)
    assert report(w, "hard", "ada@example.org") == "suppressed"
    assert w.get(subscriber_id).state == BOUNCING
    # The "resume" of a settings page mailed before the bounce no longer opens.
    assert w.client.get(old_manage).status_code in (400, 410)

    w.signup("ada@example.org", keywords="something else")
    assert w.get(subscriber_id).state == BOUNCING  # a sign-up alone changes nothing
    assert w.get(subscriber_id).keywords == "diffusion"
    assert suppressed(w, "ada@example.org")
    [message] = outbox()
    w.post_form(w.confirm_path(message))
    subscriber = w.get(subscriber_id)
    assert subscriber.state == ACTIVE and subscriber.keywords == "something else"
    assert not suppressed(w, "ada@example.org")


def test_a_complained_address_deleted_and_signed_up_again_needs_confirming(w, outbox):
    subscriber_id = w.add("zoe@example.org")
    was_sent(w, subscriber_id)
    assert report(w, "complaint", "zoe@example.org") == "unsubscribed"
    assert w.get(subscriber_id).state == UNSUBSCRIBED
    with w.db.session() as session:
        subscriptions.delete(session, storage.subscriber_by_id(session, subscriber_id))
    assert suppressed(w, "zoe@example.org")  # the list outlives the row

    w.signup("zoe@example.org")
    comeback = w.by_email("zoe@example.org")
    assert comeback is not None and comeback.state == "pending"
    assert suppressed(w, "zoe@example.org")
    [message] = outbox()
    w.post_form(w.confirm_path(message))
    assert w.get(comeback.id).state == ACTIVE
    assert not suppressed(w, "zoe@example.org")
