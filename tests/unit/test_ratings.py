"""Ratings on the ledger's side: one per (subscriber, paper), the latest wins, gone with them."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from newsletter import storage, subscriptions
from newsletter.models import Rating


def _reader(db, settings, email: str = "reader@example.org") -> int:
    with db.session() as session:
        return subscriptions.subscribe(
            session,
            settings,
            email=email,
            keywords="diffusion",
            now=storage.utcnow(),
            confirmed=True,
        ).id


def test_the_latest_rating_wins_and_clearing_forgets_it(db, settings):
    reader = _reader(db, settings)
    now = storage.utcnow()
    with db.session() as session:
        storage.set_rating(session, reader, "2401.00001", 1, origin="email", now=now)
        storage.set_rating(
            session, reader, "2401.00001", -1, origin="web", now=now, edition=date(2026, 12, 1)
        )
        storage.set_rating(session, reader, "2401.00002", 1, origin="import", now=now)
    with db.session() as session:
        assert storage.ratings_by_subscriber(session, [reader, reader + 1]) == {
            reader: {"2401.00001": -1, "2401.00002": 1}
        }
        (changed,) = [r for r in storage.subscriber_ratings(session, reader) if r.value == -1]
        assert (changed.origin, changed.edition) == ("web", date(2026, 12, 1))
        assert storage.clear_rating(session, reader, "2401.00001")
        assert not storage.clear_rating(session, reader, "2401.00001")
    with db.session() as session:
        assert storage.ratings_by_subscriber(session, [reader]) == {reader: {"2401.00002": 1}}


def test_a_rating_is_up_or_down(db, settings):
    reader = _reader(db, settings)
    with db.session() as session, pytest.raises(ValueError, match="1 or -1"):
        storage.set_rating(session, reader, "2401.00001", 2, origin="web", now=storage.utcnow())


def test_ratings_go_with_the_subscriber(db, settings):
    reader, other = _reader(db, settings), _reader(db, settings, "other@example.org")
    with db.session() as session:
        for who in (reader, other):
            storage.set_rating(session, who, "2401.00001", 1, origin="web", now=storage.utcnow())
    with db.session() as session:
        storage.delete_subscriber(session, reader)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Rating)) == 1
        assert storage.ratings_by_subscriber(session, [reader, other]) == {other: {"2401.00001": 1}}
