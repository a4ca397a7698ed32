"""The reader's past digests in storage, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import update

from newsletter import storage, subscriptions
from newsletter.models import PLANNED, SENT, Delivery
from newsletter.planned import PlannedItem, PlannedRow

NOW = datetime(2026, 6, 20, 7, 0)


def _subscriber(db, email: str) -> int:
    with db.session() as session:
        settings = db.settings
        return subscriptions.subscribe(
            session, settings, email=email, keywords="agents", now=NOW, confirmed=True
        ).id


def _rows(db, subscriber_id: int, days: int) -> list[int]:
    """`days` ledger rows, one a day; all sent but the last (still planned)."""
    with db.session() as session:
        storage.create_deliveries(
            session,
            [
                PlannedRow(
                    subscriber_id,
                    date(2026, 6, 10) + timedelta(days=day),
                    PLANNED,
                    (PlannedItem(f"2606.{subscriber_id}{day:04d}", 1.0),),
                )
                for day in range(days)
            ],
            NOW,
        )
    with db.session() as session:
        ids = [r.id for r in storage.subscriber_deliveries(session, subscriber_id)][::-1]
        for day, row_id in enumerate(ids[:-1]):
            session.execute(
                update(Delivery)
                .where(Delivery.id == row_id)
                .values(state=SENT, sent_at=NOW + timedelta(days=day))
            )
    return ids


def test_sent_digests_latest_first_and_only_the_subscribers_own(backend_db):
    ada, bob = (
        _subscriber(backend_db, "ada@example.org"),
        _subscriber(backend_db, "bob@example.org"),
    )
    ada_rows, bob_rows = _rows(backend_db, ada, 4), _rows(backend_db, bob, 2)
    with backend_db.session() as session:
        sent = storage.sent_deliveries(session, ada)
        assert [row.id for row in sent] == ada_rows[:-1][::-1]
        assert all(row.state == SENT for row in sent)
        assert [r.id for r in storage.sent_deliveries(session, ada, limit=2)] == [
            row.id for row in sent
        ][:2]
        assert storage.delivery_of_subscriber(session, ada_rows[0], ada).id == ada_rows[0]
        assert storage.delivery_of_subscriber(session, bob_rows[0], ada) is None
        assert storage.delivery_of_subscriber(session, 10_000, ada) is None


def test_a_view_link_of_before_a_resend_finds_the_resent_row(backend_db):
    ada = _subscriber(backend_db, "ada@example.org")
    first = _rows(backend_db, ada, 2)[0]
    with backend_db.session() as session:
        edition = storage.delivery_of_subscriber(session, first, ada).edition
    for key in ("one", "two"):  # resent twice: the first id moved twice
        with backend_db.session() as session:
            outcome = storage.resend_delivery(
                session, subscriber_id=ada, edition=edition, operator="op", request_key=key, now=NOW
            )
            assert outcome.status == "resent", outcome
        with backend_db.session() as session:
            session.execute(update(Delivery).where(Delivery.edition == edition).values(state=SENT))
    with backend_db.session() as session:
        found = storage.delivery_of_subscriber(session, first, ada)
        assert found is not None and found.id != first and found.edition == edition
