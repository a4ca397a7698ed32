"""The operator's commands: clear errors that change nothing, and the happy paths."""

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from newsletter.cli import app
from newsletter.db import Database
from newsletter.models import Subscriber

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
    from newsletter.config import load_settings

    assert subscriber_count(load_settings()) == 0


def test_subscribe_then_unsubscribe(env):
    result = runner.invoke(app, ["subscribe", "Ada@Example.org", "--keywords", "diffusion"])
    assert result.exit_code == 0, result.output
    assert "ada@example.org is active" in result.output
    result = runner.invoke(app, ["unsubscribe", "ada@example.org"])
    assert result.exit_code == 0 and "unsubscribed" in result.output
    result = runner.invoke(app, ["unsubscribe", "nobody@example.org"])
    assert result.exit_code == 2 and "no subscriber" in result.output


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
