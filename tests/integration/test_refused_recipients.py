"""A recipient refused at RCPT (5xx): bouncing after the threshold, and on the suppression list."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from newsletter import pipeline
from newsletter.bounces.events import is_suppressed
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, BOUNCING, Subscriber, Suppression
from tests.support.ledger import demo_day_subscribers

pytestmark = pytest.mark.integration


@pytest.fixture
def service(tmp_path, faulty_smtp_server):
    """A migrated database with the recorded day and two subscribers, mailed over aiosmtpd."""
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        smtp_url=faulty_smtp_server.url,
        bounce_threshold=2,
    )
    db = Database(settings)
    db.upgrade()
    demo_day_subscribers(
        db, settings, ("gone@example.org", "here@example.org"), "agents, language models"
    )
    yield db, settings
    db.dispose()


def state_of(db: Database, address: str) -> str:
    with db.session() as session:
        return session.scalar(select(Subscriber.state).where(Subscriber.email == address))


def test_a_recipient_refused_past_the_threshold_is_suppressed(service, faulty_smtp_server):
    db, settings = service
    faulty_smtp_server.reply_for["gone@example.org"] = "550 5.1.1 No such mailbox"
    days = ["2026-06-12", "2026-06-13"]
    # The first refusal only counts: one 5xx may be the relay's passing mistake.
    assert pipeline.plan(db, settings, edition=date.fromisoformat(days[0])).planned == 2
    assert pipeline.deliver(db, settings).failed == 1
    with db.session() as session:
        assert state_of(db, "gone@example.org") == ACTIVE
        assert not is_suppressed(session, settings, "gone@example.org")

    # The second, at the threshold, makes the subscriber bouncing and suppresses the address,
    # so a later import or sign-up of it mails nothing.
    assert pipeline.plan(db, settings, edition=date.fromisoformat(days[1])).planned == 2
    assert pipeline.deliver(db, settings).failed == 1
    assert state_of(db, "gone@example.org") == BOUNCING
    with db.session() as session:
        assert is_suppressed(session, settings, "GONE@example.org")
        assert not is_suppressed(session, settings, "here@example.org")
        entry = session.scalars(select(Suppression)).one()
        assert entry.reason == "hard" and "550 5.1.1" in entry.detail
    assert state_of(db, "here@example.org") == ACTIVE
