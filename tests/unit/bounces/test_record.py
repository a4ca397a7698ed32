"""Recorded reports change the right subscriber; forged or unknown ones change nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from newsletter import storage, subscriptions
from newsletter.bounces import parse, record, verp
from newsletter.bounces.events import address_hash, is_suppressed
from newsletter.models import (
    ACTIVE,
    BOUNCING,
    UNSUBSCRIBED,
    Delivery,
    Suppression,
)
from newsletter.models import (
    BounceEvent as EventRow,
)
from newsletter.tokens import link
from newsletter.web.links import LinkError, subscriber_for

from .conftest import EDITION, recorded, sent_to, state_of


def feed(db, settings, raw: bytes, **kwargs) -> list[str]:
    with db.session() as session:
        return [record(session, settings, event, **kwargs) for event in parse(raw)]


def events_of(db, subscriber_id: int) -> list[EventRow]:
    with db.session() as session:
        rows = storage.bounce_events_for(session, subscriber_id)
        session.expunge_all()
        return rows


def counts(db) -> tuple[int, int]:
    with db.session() as session:
        return (
            session.scalar(select(func.count()).select_from(EventRow)) or 0,
            session.scalar(select(func.count()).select_from(Suppression)) or 0,
        )


# Without VERP: a report names its recipient, who must have been sent a digest lately -------


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("bounce_gmail-invalid-address.eml", "awfawfawfawfawfaw@someserverhere.com"),
        ("bounce_office365.eml", "noname@example.com"),
    ],
)
def test_a_hard_bounce_suppresses_its_recipient_at_once(db, settings, name, address):
    subscriber_id, _ = sent_to(db, settings, address)
    bystander, _ = sent_to(db, settings, "reader@example.net")
    assert feed(db, settings, recorded(name)) == ["suppressed"]
    assert state_of(db, subscriber_id) == BOUNCING
    assert state_of(db, bystander) == ACTIVE
    (event,) = events_of(db, subscriber_id)
    assert event.kind == "hard" and event.outcome == "suppressed"
    assert "5.1." in event.reason  # the raw reason, as reported
    with db.session() as session:
        assert is_suppressed(session, settings, address)
        # Nothing planned for them is sent any more.
        assert storage.delivery_ids_for(session, subscriber_id, EDITION)  # the sent row stays


def test_soft_bounces_count_and_suppress_past_the_threshold_in_the_window(db, settings):
    subscriber_id, _ = sent_to(db, settings, "user@aol.com")
    raw = recorded("bounce_mailbox-full.eml")  # 5.2.2 mailbox full: soft
    now = storage.utcnow()
    # One too old to count, then two in the window: still under a threshold of three.
    old = now - timedelta(days=settings.soft_bounce_days + 1)
    assert feed(db, settings, raw, now=old) == ["counted"]
    assert feed(db, settings, raw, now=now - timedelta(days=1)) == ["counted"]
    assert feed(db, settings, raw, now=now) == ["counted"]
    assert state_of(db, subscriber_id) == ACTIVE
    assert feed(db, settings, raw, now=now) == ["suppressed"]
    assert state_of(db, subscriber_id) == BOUNCING
    assert [e.outcome for e in events_of(db, subscriber_id)] == [
        "suppressed",
        "counted",
        "counted",
        "counted",
    ]


def test_a_give_up_after_retries_is_a_soft_bounce(db, settings):
    subscriber_id, _ = sent_to(db, settings, "foo@example.com")
    assert feed(db, settings, recorded("bounce_delayed.eml")) == ["counted"]
    assert state_of(db, subscriber_id) == ACTIVE
    assert events_of(db, subscriber_id)[0].status == "4.0.0"


def test_a_still_retrying_warning_never_counts_as_a_bounce(db, settings):
    subscriber_id, _ = sent_to(db, settings, "user@example.com")
    for _ in range(settings.soft_bounce_threshold + 2):
        assert feed(db, settings, recorded("bounce_no-mx.eml")) == ["warning"]
    assert state_of(db, subscriber_id) == ACTIVE
    events = events_of(db, subscriber_id)
    assert {e.kind for e in events} == {"delayed"}  # kept, shown, never counted
    with db.session() as session:
        assert not is_suppressed(session, settings, "user@example.com")


def test_a_yahoo_complaint_unsubscribes_and_suppresses(db, settings):
    subscriber_id, _ = sent_to(db, settings, "user@yahoo.com")
    assert feed(db, settings, recorded("complaints_yahoo.eml")) == ["unsubscribed"]
    assert state_of(db, subscriber_id) == UNSUBSCRIBED
    with db.session() as session:
        assert is_suppressed(session, settings, "user@yahoo.com")
        assert storage.suppression(session, address_hash(settings, "user@yahoo.com")).reason == (
            "complaint"
        )


def test_an_aol_complaint_finds_its_delivery_by_our_message_id(db, settings):
    subscriber_id, delivery_id = sent_to(db, settings, "reader@aol.example")
    ours = f"<digest.{EDITION:%Y%m%d}.{delivery_id}@example.org>".encode()
    raw = recorded("complaints_aol.eml").replace(b"<20101117174130.28884.55421@luna>", ours)
    assert feed(db, settings, raw) == ["unsubscribed"]
    assert state_of(db, subscriber_id) == UNSUBSCRIBED
    assert events_of(db, subscriber_id)[0].delivery_id == delivery_id


def test_unknown_recipients_and_message_ids_change_nothing(db, settings):
    subscriber_id, delivery_id = sent_to(db, settings, "reader@example.net")
    # A recipient nobody here was sent anything.
    assert feed(db, settings, recorded("bounce_office365.eml")) == ["unknown"]
    # A Message-ID of ours for another recipient than the report names.
    ours = f"<digest.{EDITION:%Y%m%d}.{delivery_id}@example.org>".encode()
    raw = recorded("complaints_yahoo.eml").replace(
        b"<20120711015015.4A8BE2E088E@www.example.com>", ours
    )
    assert feed(db, settings, raw) == ["unknown"]
    # A Message-ID of ours for a row that does not exist.
    ghost = recorded("complaints_aol.eml").replace(
        b"<20101117174130.28884.55421@luna>", b"<digest.20260601.999999@example.org>"
    )
    assert feed(db, settings, ghost) == ["unknown"]
    assert state_of(db, subscriber_id) == ACTIVE
    assert counts(db) == (3, 0)  # every event is kept, nothing suppressed


def test_a_subscriber_never_sent_anything_is_not_bounced_by_address(db, settings):
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session,
            settings,
            email="noname@example.com",
            keywords="x",
            now=storage.utcnow(),
            confirmed=True,
        )
        subscriber_id = subscriber.id
    assert feed(db, settings, recorded("bounce_office365.eml")) == ["unknown"]
    assert state_of(db, subscriber_id) == ACTIVE


# With VERP: the envelope names the delivery, and nothing else is believed ------------------


def with_verp(raw: bytes, address: str) -> bytes:
    """The recorded Postfix/AOL bounce sent back to `address` instead of Mailgun's VERP."""
    return raw.replace(b"bounce+8c8b98.c-user=aol.com@example.com", address.encode())


def test_verp_names_the_delivery_whatever_address_the_report_gives(verp_db, verp_settings):
    db, settings = verp_db, verp_settings
    # The relay reports user@aol.com, but the digest went to a forwarding address.
    subscriber_id, delivery_id = sent_to(db, settings, "forwarder@example.net")
    # Gmail's notice goes to the envelope sender: our VERP address instead of the original's.
    address = verp.return_path(settings, delivery_id)
    raw = recorded("bounce_gmail-invalid-address.eml").replace(
        b"To: awfawdadfawkofawooowowow@gmail.com", b"To: " + address.encode()
    )
    assert feed(db, settings, raw) == ["suppressed"]
    assert state_of(db, subscriber_id) == BOUNCING
    assert events_of(db, subscriber_id)[0].delivery_id == delivery_id


def test_a_verp_soft_bounce_is_counted_for_its_delivery(verp_db, verp_settings):
    db, settings = verp_db, verp_settings
    subscriber_id, delivery_id = sent_to(db, settings, "someone@example.net")
    raw = with_verp(recorded("bounce_mailbox-full.eml"), verp.return_path(settings, delivery_id))
    assert feed(db, settings, raw) == ["counted"]
    assert events_of(db, subscriber_id)[0].status == "5.2.2"


def test_a_forged_verp_address_changes_nothing(verp_db, verp_settings):
    db, settings = verp_db, verp_settings
    subscriber_id, delivery_id = sent_to(db, settings, "user@aol.com")
    genuine = verp.return_path(settings, delivery_id)
    tag = genuine.split(".", 1)[1].split("@")[0]
    forged = genuine.replace(tag, "0123456789ab" if tag != "0123456789ab" else "ba9876543210")
    raw = with_verp(recorded("bounce_mailbox-full.eml"), forged)
    for _ in range(settings.soft_bounce_threshold + 1):
        assert feed(db, settings, raw) == ["forged"]
    assert state_of(db, subscriber_id) == ACTIVE
    assert events_of(db, subscriber_id) == []  # kept, but tied to nobody
    assert counts(db) == (settings.soft_bounce_threshold + 1, 0)


def test_with_verp_on_an_address_alone_names_nobody(verp_db, verp_settings):
    db, settings = verp_db, verp_settings
    subscriber_id, _ = sent_to(db, settings, "noname@example.com")
    assert feed(db, settings, recorded("bounce_office365.eml")) == ["unknown"]
    assert state_of(db, subscriber_id) == ACTIVE


def test_the_same_report_twice_records_once(db, settings):
    subscriber_id, _ = sent_to(db, settings, "user@aol.com")
    (event,) = parse(recorded("bounce_mailbox-full.eml"))
    keyed = replace(event, report_key="provider-event-1")  # e.g. a webhook's event id
    with db.session() as session:
        assert record(session, settings, keyed) == "counted"
    with db.session() as session:
        assert record(session, settings, keyed) == "duplicate"
    assert len(events_of(db, subscriber_id)) == 1


# Hygiene: suppression survives deletion; only a fresh confirmation brings an address back --


def test_the_suppression_survives_deleting_the_subscriber(db, settings):
    address = "noname@example.com"
    subscriber_id, _ = sent_to(db, settings, address)
    feed(db, settings, recorded("bounce_office365.eml"))
    with db.session() as session:
        subscriptions.delete(session, storage.subscriber_by_id(session, subscriber_id))
    with db.session() as session:
        assert storage.subscriber_by_email(session, address) is None
        assert is_suppressed(session, settings, address)
        (entry,) = storage.suppressions(session)
        assert address not in entry.address_hash and entry.reason == "hard"
        (event,) = session.scalars(select(EventRow))
        # The event stays for the rates, without the address.
        assert event.subscriber_id is None and address not in event.recipient + event.reason


def test_an_operator_cannot_bring_back_a_suppressed_address(db, settings):
    address = "noname@example.com"
    subscriber_id, _ = sent_to(db, settings, address)
    feed(db, settings, recorded("bounce_office365.eml"))
    with db.session() as session, pytest.raises(subscriptions.SubscriptionError) as raised:
        subscriptions.subscribe(
            session, settings, email=address, keywords="new", now=storage.utcnow(), confirmed=True
        )
    assert "suppression list" in str(raised.value)
    assert state_of(db, subscriber_id) == BOUNCING


def test_an_anonymous_sign_up_of_a_bounced_address_changes_nothing_until_confirmed(db, settings):
    address = "noname@example.com"
    subscriber_id, _ = sent_to(db, settings, address)
    feed(db, settings, recorded("bounce_office365.eml"))
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, settings, email=address, keywords="spam, stuff", now=storage.utcnow()
        )
        assert subscriber.state == BOUNCING and subscriber.keywords == "agents"
        assert subscriber.pending_preferences["keywords"] == "spam, stuff"


def test_a_bounce_kills_the_links_mailed_before(db, settings):
    subscriber_id, _ = sent_to(db, settings, "noname@example.com")
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        old_manage = link(settings, "manage", subscriber.id, subscriber.link_key).rsplit("/", 1)[1]
    feed(db, settings, recorded("bounce_office365.eml"))
    with db.session() as session, pytest.raises(LinkError):
        subscriber_for(session, settings, "manage", old_manage)


def test_planned_digests_of_a_bounced_subscriber_are_cancelled(db, settings):
    subscriber_id, _ = sent_to(db, settings, "noname@example.com")
    with db.session() as session:
        session.add(
            Delivery(
                subscriber_id=subscriber_id,
                edition=EDITION + timedelta(days=1),
                state="planned",
                items=[],
                created_at=storage.utcnow(),
            )
        )
    feed(db, settings, recorded("bounce_office365.eml"))
    with db.session() as session:
        states = set(
            session.scalars(select(Delivery.state).where(Delivery.subscriber_id == subscriber_id))
        )
    assert states == {"sent"}


def test_record_suppress_and_the_daily_rates_on_both_databases(backend_db):
    db, settings = backend_db, backend_db.settings
    hard, _ = sent_to(db, settings, "noname@example.com")
    complained, _ = sent_to(db, settings, "user@yahoo.com")
    sent_to(db, settings, "reader@example.net")
    assert feed(db, settings, recorded("bounce_office365.eml")) == ["suppressed"]
    assert feed(db, settings, recorded("complaints_yahoo.eml")) == ["unsubscribed"]
    assert feed(db, settings, recorded("complaints_yahoo.eml")) == ["already"]  # no error twice
    assert (state_of(db, hard), state_of(db, complained)) == (BOUNCING, UNSUBSCRIBED)
    with db.session() as session:
        days = storage.complaints_and_sent_by_day(session, days=7)
        assert len(storage.suppressions(session)) == 2
    assert len(days) == 7 and days[-1] == (storage.utcnow().date(), 2, 3)
    assert all(complaints == sent == 0 for _, complaints, sent in days[:-1])
