"""The operator's commands: clear errors that change nothing, and the happy paths."""

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from newsletter import storage
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, PLANNED, SENT, UNSUBSCRIBED, Delivery, Subscriber

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    return tmp_path / "var"


def subscriber_count(settings) -> int:
    db = Database(settings)
    try:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(Subscriber)) or 0
    finally:
        db.dispose()


def test_bad_config_value_stops_with_the_variable_name(env, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SEND_HOUR", "31")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 2
    assert "NEWSLETTER_SEND_HOUR" in result.output
    assert not env.exists()


@pytest.mark.parametrize(
    ("email", "keywords", "message"),
    [
        ("not-an-address", "diffusion", "email"),
        ("someone@", "diffusion", "email"),
        ("ok@example.org", "", "keywords"),
        ("ok@example.org", "  \n ", "keywords"),
    ],
)
def test_subscribe_rejects_bad_input_and_changes_nothing(env, settings, email, keywords, message):
    runner.invoke(app, ["db", "upgrade"])
    result = runner.invoke(app, ["subscribe", email, "--keywords", keywords])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert subscriber_count(load_settings()) == 0  # an empty database stays empty


def open_db() -> Database:
    """The database the commands use (NEWSLETTER_VAR_DIR from `env`)."""
    return Database(load_settings())


def subscriber_row(email: str) -> Subscriber | None:
    db = open_db()
    try:
        with db.session() as session:
            return storage.subscriber_by_email(session, email)
    finally:
        db.dispose()


def snapshot() -> dict[str, list[tuple]]:
    """Every subscriber and delivery row, every column: what a command may have changed."""
    db = open_db()
    try:
        with db.session() as session:
            tables = {"subscribers": Subscriber, "deliveries": Delivery}
            return {
                name: [
                    tuple(getattr(row, column.key) for column in model.__table__.columns)
                    for row in session.scalars(select(model).order_by(model.id))
                ]
                for name, model in tables.items()
            }
    finally:
        db.dispose()


def add_delivery(subscriber_id: int, state: str, edition: date) -> int:
    db = open_db()
    try:
        with db.session() as session:
            row = Delivery(
                subscriber_id=subscriber_id, edition=edition, state=state, created_at=NOW
            )
            session.add(row)
            session.flush()
            return row.id
    finally:
        db.dispose()


def delivery_ids() -> list[int]:
    return [row[0] for row in snapshot()["deliveries"]]


NOW = storage.utcnow()
TODAY = NOW.date()


def invoke(*args: str):
    """Run a command; returns (result, UTC time before, UTC time after)."""
    before = storage.utcnow()
    result = runner.invoke(app, list(args))
    return result, before, storage.utcnow()


def test_subscribe_adds_an_active_subscriber_with_what_was_given(env):
    result, before, after = invoke(
        "subscribe",
        "Ada@Example.org",
        "--keywords",
        ' diffusion, "label noise" ',
        "--timezone",
        "Europe/Paris",
        "--send-hour",
        "6",
        "--size",
        "5",
    )
    assert result.exit_code == 0, result.output
    assert "ada@example.org is active" in result.output
    ada = subscriber_row("ada@example.org")
    assert ada is not None
    assert (ada.state, ada.keywords) == (ACTIVE, 'diffusion, "label noise"')
    assert (ada.timezone, ada.send_hour, ada.digest_size) == ("Europe/Paris", 6, 5)
    # Added by an operator: confirmed at once, at the time of the command.
    assert before <= ada.created_at == ada.confirmed_at <= after
    assert ada.unsubscribed_at is None and ada.hard_failures == 0
    assert len(snapshot()["subscribers"]) == 1


def test_subscribe_again_updates_the_same_row(env):
    invoke("subscribe", "ada@example.org", "--keywords", "diffusion")
    first = subscriber_row("ada@example.org")
    result, _, _ = invoke("subscribe", "ADA@example.org", "--keywords", "transformers")
    assert result.exit_code == 0, result.output
    again = subscriber_row("ada@example.org")
    assert again is not None and first is not None
    assert (again.id, again.state, again.keywords) == (first.id, ACTIVE, "transformers")
    assert again.confirmed_at == first.confirmed_at  # still the first confirmation
    assert len(snapshot()["subscribers"]) == 1


def test_unsubscribe_stops_planned_mail_and_keeps_the_record(env):
    invoke("subscribe", "ada@example.org", "--keywords", "diffusion")
    ada = subscriber_row("ada@example.org")
    assert ada is not None
    sent = add_delivery(ada.id, SENT, TODAY - timedelta(days=1))
    add_delivery(ada.id, PLANNED, TODAY)
    result, before, after = invoke("unsubscribe", "Ada@Example.org")
    assert result.exit_code == 0 and "ada@example.org is unsubscribed" in result.output
    gone = subscriber_row("ada@example.org")
    assert gone is not None
    assert (gone.state, gone.keywords) == (UNSUBSCRIBED, "diffusion")
    assert gone.unsubscribed_at is not None and before <= gone.unsubscribed_at <= after
    # The planned digest is cancelled; what was sent stays in the ledger.
    assert delivery_ids() == [sent]
    # Unsubscribing again changes nothing, not even the time.
    unchanged = snapshot()
    result, _, _ = invoke("unsubscribe", "ada@example.org")
    assert result.exit_code == 0, result.output
    assert snapshot() == unchanged


def test_subscribing_after_unsubscribing_makes_the_subscriber_active_again(env):
    invoke("subscribe", "ada@example.org", "--keywords", "diffusion")
    invoke("unsubscribe", "ada@example.org")
    result, before, after = invoke("subscribe", "ada@example.org", "--keywords", "label noise")
    assert result.exit_code == 0, result.output
    ada = subscriber_row("ada@example.org")
    assert ada is not None
    assert (ada.state, ada.keywords, ada.unsubscribed_at) == (ACTIVE, "label noise", None)
    assert ada.confirmed_at is not None and before <= ada.confirmed_at <= after


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["subscribe", "ada@example.org", "--keywords", ""], "keywords"),
        (["subscribe", "ada@example.org", "--keywords", '"unclosed'], "A quote is not closed"),
        (["subscribe", "ada@example.org", "--keywords", "x", "--send-hour", "24"], "send_hour"),
        (["subscribe", "ada@example.org", "--keywords", "x", "--timezone", "Mars/Base"], "zone"),
        (["subscribe", "ada@example.org", "--keywords", "x", "--timezone", ""], "zone"),
        (["subscribe", "ada@example.org", "--keywords", "x", "--size", "0"], "digest_size"),
        (["subscribe", "ada@example.org", "--keywords", "x", "--size", "51"], "digest_size"),
        (["subscribe", "ada@", "--keywords", "x"], "email"),
        (["subscribe", "new@example.org", "--keywords", "-"], "keywords"),
        (["unsubscribe", "nobody@example.org"], "no subscriber nobody@example.org"),
        (["unsubscribe", "not-an-address"], "This email address cannot be used"),
    ],
)
def test_a_rejected_command_changes_nothing(env, command, message):
    invoke("subscribe", "ada@example.org", "--keywords", "diffusion", "--size", "7")
    ada = subscriber_row("ada@example.org")
    assert ada is not None
    add_delivery(ada.id, PLANNED, TODAY)
    before = snapshot()
    result, _, _ = invoke(*command)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output
    assert snapshot() == before


def test_status_on_an_empty_database(env):
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    for heading in ("Subscribers", "Papers", "Deliveries", "Last source runs"):
        assert heading in result.output


def test_bad_date_is_refused(env):
    result = runner.invoke(app, ["papers", "--date", "12/06/2026"])
    assert result.exit_code == 2
    assert "not a date" in result.output


def test_unknown_source_is_refused(env):
    result = runner.invoke(app, ["collect", "--source", "nature"])
    assert result.exit_code == 2
    assert "unknown source" in result.output
