"""Recorded bounces and feedback reports, and subscribers who were sent a digest."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from newsletter import storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import SENT, Delivery

FIXTURES = Path(__file__).parents[2] / "fixtures" / "bounces"
EDITION = date(2026, 6, 1)


def recorded(name: str) -> bytes:
    """A recorded message from tests/fixtures/bounces (see PROVENANCE.md there)."""
    return (FIXTURES / name).read_bytes()


def sent_to(db: Database, settings, email: str, *, edition: date = EDITION) -> tuple[int, int]:
    """An active subscriber who was sent the digest of `edition`: (subscriber id, delivery id)."""
    now = storage.utcnow()
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, email)
        if subscriber is None:
            subscriber = subscriptions.subscribe(
                session, settings, email=email, keywords="agents", now=now, confirmed=True
            )
        row = Delivery(
            subscriber_id=subscriber.id,
            edition=edition,
            state=SENT,
            items=[],
            created_at=now - timedelta(hours=2),
            sent_at=now,
        )
        session.add(row)
        session.flush()
        row.message_id = f"<digest.{edition:%Y%m%d}.{row.id}@example.org>"
        return subscriber.id, row.id


def state_of(db: Database, subscriber_id: int) -> str:
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        assert subscriber is not None
        return subscriber.state


def make_settings(tmp_path: Path, **values):
    return load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        from_address="Paper Digest <digest@example.org>",
        **values,
    )


@pytest.fixture
def settings(tmp_path):
    """No VERP: a report can name its recipient only (or a Message-ID of ours)."""
    return make_settings(tmp_path)


@pytest.fixture
def verp_settings(tmp_path):
    return make_settings(tmp_path, bounce_address="bounces@example.org")


@pytest.fixture
def verp_db(verp_settings):
    database = Database(verp_settings)
    database.upgrade()
    yield database
    database.dispose()


def at() -> datetime:
    return storage.utcnow()
