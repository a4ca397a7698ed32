"""`newsletter admin add-user, remove-user, list`; the dashboard storage on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from newsletter import storage
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import ACTIVE, PLANNED, SENT, Delivery, DeliveryResend, Subscriber
from newsletter.web.admin import accounts

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")


def operators() -> dict[str, str]:
    db = Database(load_settings())
    try:
        db.upgrade()
        with db.session() as session:
            return {o.username: o.password_hash for o in storage.operators(session)}
    finally:
        db.dispose()


def test_add_user_reads_the_password_from_stdin_and_stores_an_argon2_hash(env):
    result = runner.invoke(
        app, ["admin", "add-user", "olga", "--password-stdin"], input="a long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    assert "operator olga added" in result.output
    stored = operators()["olga"]
    assert stored.startswith("$argon2id$") and "a long passphrase" not in stored
    assert accounts.verify_password(stored, "a long passphrase")
    assert not accounts.verify_password(stored, "a long passphrasE")


def test_add_user_asks_twice_without_echo(env, monkeypatch):
    import getpass

    answers = iter(["typed twice ok", "typed twice ok"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    result = runner.invoke(app, ["admin", "add-user", "olga"])
    assert result.exit_code == 0, result.output
    assert accounts.verify_password(operators()["olga"], "typed twice ok")


def test_two_different_passwords_change_nothing(env, monkeypatch):
    import getpass

    answers = iter(["the first password", "the other password"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    result = runner.invoke(app, ["admin", "add-user", "olga"])
    assert result.exit_code == 2
    assert "differ" in result.output
    assert operators() == {}


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("olga", "short", "at least 10"),
        ("bad name", "a long passphrase", "not a valid operator name"),
        ("_x", "a long passphrase", "not a valid operator name"),
    ],
)
def test_a_bad_name_or_password_is_refused_and_changes_nothing(env, name, password, message):
    result = runner.invoke(app, ["admin", "add-user", name, "--password-stdin"], input=password)
    assert result.exit_code == 2
    assert message in result.output
    assert operators() == {}


def test_add_user_again_sets_a_new_password(env):
    runner.invoke(app, ["admin", "add-user", "olga", "--password-stdin"], input="first password")
    result = runner.invoke(
        app, ["admin", "add-user", "olga", "--password-stdin"], input="second password"
    )
    assert "has a new password" in result.output
    assert accounts.verify_password(operators()["olga"], "second password")


def test_list_and_remove_user(env):
    assert "dashboard at /admin is off" in runner.invoke(app, ["admin", "list"]).output
    runner.invoke(app, ["admin", "add-user", "olga", "--password-stdin"], input="a long password")
    listed = runner.invoke(app, ["admin", "list"]).output
    assert "olga" in listed and "never" in listed
    result = runner.invoke(app, ["admin", "remove-user", "olga"])
    assert result.exit_code == 0 and operators() == {}
    result = runner.invoke(app, ["admin", "remove-user", "olga"])
    assert result.exit_code == 2 and "no operator olga" in result.output


def test_resend_on_both_databases(backend_db):
    """The resend replaces the row under a new id, records it, and is once per request key."""
    now = storage.utcnow()
    with backend_db.session() as session:
        subscriber = Subscriber(email="a@example.org", state=ACTIVE, keywords="x", created_at=now)
        session.add(subscriber)
        session.flush()
        row = Delivery(
            subscriber_id=subscriber.id,
            edition=now.date(),
            state=SENT,
            items=[{"id": "2601.00001", "score": 1.0}],
            paper_ids=["2601.00001"],
            message_id="<old@x>",
            sent_at=now,
            created_at=now,
        )
        session.add(row)
        session.flush()
        old_id, subscriber_id = row.id, subscriber.id

    def resend(key: str) -> storage.ResendOutcome:
        with backend_db.session() as session:
            return storage.resend_delivery(
                session,
                subscriber_id=subscriber_id,
                edition=now.date(),
                operator="olga",
                request_key=key,
                now=now + timedelta(minutes=1),
            )

    done = resend("k" * 24)
    assert done.status == "resent" and done.delivery_id != old_id
    assert resend("k" * 24).status == "repeated"
    assert resend("j" * 24).status == "busy"
    with backend_db.session() as session:
        [copy] = session.scalars(select(Delivery)).all()
        assert (copy.id, copy.state, copy.paper_ids, copy.message_id) == (
            done.delivery_id,
            PLANNED,
            ["2601.00001"],
            None,
        )
        [record] = session.scalars(select(DeliveryResend)).all()
        assert (record.previous_delivery_id, record.previous_message_id) == (old_id, "<old@x>")
        # The planner still sees the papers reserved: never planned for this reader again.
        assert storage.reserved_paper_ids(session, [subscriber_id], now - timedelta(days=1)) == {
            subscriber_id: {"2601.00001"}
        }
        # A subscriber deleted takes their resend records with them.
        storage.delete_subscriber(session, subscriber_id)
    with backend_db.session() as session:
        assert session.scalars(select(DeliveryResend)).all() == []


def test_an_unknown_name_is_checked_against_a_decoy_hash(monkeypatch):
    """No early return for an unknown operator: the same argon2 verification runs."""
    calls: list[str] = []
    real = accounts._HASHER

    class Counting:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return real.verify(stored, password)

    monkeypatch.setattr(accounts, "_HASHER", Counting())
    stored = accounts.hash_password("the real password")
    assert not accounts.verify_password(None, "the real password")
    assert not accounts.verify_password(stored, "a wrong password")
    assert accounts.verify_password(stored, "the real password")
    assert len(calls) == 3 and calls[0].startswith("$argon2id$")
    assert not accounts.verify_password(None, "a password nobody has")  # not even the decoy's
