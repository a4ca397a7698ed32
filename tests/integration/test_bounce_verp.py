"""VERP on the wire: the digest's MAIL FROM names its delivery, and its bounce finds the row."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage
from newsletter.bounces import parse, record, verp
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, BOUNCING, Delivery, Subscriber
from tests.support.ledger import demo_day_subscribers

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"


@pytest.fixture
def verp_db(tmp_path, smtp_server):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        smtp_url=smtp_server.url,
        from_address="Paper Digest <digest@example.org>",
        bounce_address="bounces@example.org",
    )
    db = Database(settings)
    db.upgrade()
    yield db
    db.dispose()


def test_each_digest_is_sent_from_its_own_verp_address(verp_db, smtp_server):
    db, settings = verp_db, verp_db.settings
    demo_day_subscribers(db, settings, ("ada@example.org", "bob@example.org"), "agents, reasoning")
    assert pipeline.plan(db, settings).planned == 2
    assert pipeline.deliver(db, settings).sent == 2
    with db.session() as session:
        rows = {
            email: (row_id, subscriber_id)
            for row_id, subscriber_id, email in session.execute(
                select(Delivery.id, Delivery.subscriber_id, Subscriber.email).join(
                    Subscriber, Subscriber.id == Delivery.subscriber_id
                )
            )
        }
    senders = {}
    for message, envelope in zip(smtp_server.messages, smtp_server.envelopes, strict=True):
        (recipient,) = envelope.rcpt_tos
        senders[recipient] = envelope.mail_from
        # The From header is the newsletter's; only the envelope carries the VERP address.
        assert message["From"] == "Paper Digest <digest@example.org>"
        assert "Return-Path" not in message
    for email, (row_id, _) in rows.items():
        assert senders[email] == verp.return_path(settings, row_id)
        assert verp.delivery_of(settings, senders[email]) == row_id

    # Ada's mailbox is gone: her relay's Gmail-style notice comes back to the VERP address.
    ada_row, ada = rows["ada@example.org"]
    raw = (FIXTURES / "bounce_gmail-invalid-address.eml").read_bytes()
    raw = raw.replace(
        b"To: awfawdadfawkofawooowowow@gmail.com", b"To: " + senders["ada@example.org"].encode()
    )
    with db.session() as session:
        assert [record(session, settings, event) for event in parse(raw)] == ["suppressed"]
    with db.session() as session:
        assert storage.subscriber_by_id(session, ada).state == BOUNCING
        assert storage.subscriber_by_id(session, rows["bob@example.org"][1]).state == ACTIVE
        (event,) = storage.bounce_events_for(session, ada)
        assert event.delivery_id == ada_row


def test_without_a_bounce_address_the_envelope_is_the_from_address(tmp_path, smtp_server):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        smtp_url=smtp_server.url,
        from_address="Paper Digest <digest@example.org>",
    )
    db = Database(settings)
    db.upgrade()
    try:
        demo_day_subscribers(db, settings, ["ada@example.org"], "agents")
        pipeline.plan(db, settings)
        assert pipeline.deliver(db, settings).sent == 1
        assert smtp_server.envelopes[0].mail_from == "digest@example.org"
    finally:
        db.dispose()
