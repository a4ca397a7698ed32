"""`newsletter delete EMAIL`: the subscriber and their ledger rows go, nobody else's."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from newsletter import storage
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import PLANNED, SENT, Delivery, Subscriber
from newsletter.planned import PlannedRow

runner = CliRunner()


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    for email in ("ada@example.org", "bob@example.org"):
        result = runner.invoke(app, ["subscribe", email, "--keywords", "diffusion"])
        assert result.exit_code == 0, result.output
    database = Database(load_settings())
    with database.session() as session:
        for email in ("ada@example.org", "bob@example.org"):
            subscriber = storage.subscriber_by_email(session, email)
            assert subscriber is not None
            rows = [
                PlannedRow(subscriber.id, date(2026, 6, day), state)
                for day, state in ((11, SENT), (12, PLANNED))
            ]
            storage.create_deliveries(session, rows, storage.utcnow())
    yield database
    database.dispose()


def _rows(db: Database) -> dict[str, int]:
    """Ledger rows per address still in the database."""
    with db.session() as session:
        found = session.execute(
            select(Subscriber.email, func.count(Delivery.id))
            .outerjoin(Delivery, Delivery.subscriber_id == Subscriber.id)
            .group_by(Subscriber.email)
        )
        return {email: count for email, count in found}


def test_delete_removes_the_subscriber_and_their_ledger(db):
    result = runner.invoke(app, ["delete", "Ada@Example.org", "--yes"])
    assert result.exit_code == 0, result.output
    assert "ada@example.org is deleted, with 2 delivery record(s)" in result.output
    assert _rows(db) == {"bob@example.org": 2}
    with db.session() as session:
        orphans = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.subscriber_id.not_in(select(Subscriber.id)))
        )
    assert orphans == 0


def test_delete_asks_first_and_no_changes_nothing(db):
    result = runner.invoke(app, ["delete", "ada@example.org"], input="n\n")
    assert result.exit_code == 1
    assert "nothing deleted" in result.output
    assert _rows(db) == {"ada@example.org": 2, "bob@example.org": 2}
    result = runner.invoke(app, ["delete", "ada@example.org"], input="y\n")
    assert result.exit_code == 0, result.output
    assert _rows(db) == {"bob@example.org": 2}


@pytest.mark.parametrize(
    ("email", "message"), [("nobody@example.org", "no subscriber"), ("not-an-address", "email")]
)
def test_delete_of_an_unknown_or_bad_address_changes_nothing(db, email, message):
    result = runner.invoke(app, ["delete", email, "--yes"])
    assert result.exit_code == 2
    assert message in result.output
    assert _rows(db) == {"ada@example.org": 2, "bob@example.org": 2}
