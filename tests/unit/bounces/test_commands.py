"""The operator's side: status shows the complaint rate, the suppression list, the schedule."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from newsletter import schedule, storage
from newsletter.bounces import BounceEvent, record
from newsletter.config import ConfigError, load_settings
from newsletter.db import Database

from .conftest import sent_to

runner = CliRunner()


@pytest.fixture
def cli_db(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    monkeypatch.setenv("NEWSLETTER_FROM_ADDRESS", "Paper Digest <digest@example.org>")
    db = Database(load_settings())
    db.upgrade()
    yield db
    db.dispose()


def complain(db, email: str) -> None:
    with db.session() as session:
        record(session, db.settings, BounceEvent(kind="complaint", recipient=email, source="arf"))


def test_status_shows_the_complaint_rate_and_warns_above_a_thousandth(cli_db):
    for n in range(3):
        sent_to(cli_db, cli_db.settings, f"reader{n}@example.org")
    quiet = runner.invoke(app_cli(), ["status"])
    assert quiet.exit_code == 0, quiet.output
    assert "Complaints (last 7 days)" in quiet.output and "warning" not in quiet.output
    complain(cli_db, "reader0@example.org")  # 1 of 3 sent today: 33%
    loud = runner.invoke(app_cli(), ["status"])
    assert "33.33%" in loud.output
    assert "complaint rate above 0.1%" in loud.output


def test_one_complaint_in_two_thousand_is_no_warning(cli_db):
    sent_to(cli_db, cli_db.settings, "reader@example.org")
    with cli_db.session() as session:
        days = storage.complaints_and_sent_by_day(session, days=7)
    assert days[-1][0] == storage.utcnow().date() and days[-1][2] == 1
    from newsletter.cli import _complaint_status, console

    today = days[-1][0]
    with console.capture() as captured:
        _complaint_status([(today, 1, 2000)])
    assert "0.05%" in captured.get() and "warning" not in captured.get()
    with console.capture() as captured:
        _complaint_status([(today, 3, 2000)])
    assert "0.15%" in captured.get() and "warning" in captured.get()


def test_suppressions_are_listed_by_hash_and_removed_by_address(cli_db):
    sent_to(cli_db, cli_db.settings, "user@yahoo.com")
    complain(cli_db, "user@yahoo.com")
    listed = runner.invoke(app_cli(), ["suppressions", "list"])
    assert listed.exit_code == 0 and "complaint" in listed.output
    assert "user@yahoo.com" not in listed.output  # the address itself is not kept
    missing = runner.invoke(app_cli(), ["suppressions", "remove", "other@example.org"])
    assert missing.exit_code == 1 and "not suppressed" in missing.output
    bad = runner.invoke(app_cli(), ["suppressions", "remove", "not-an-address"])
    assert bad.exit_code == 2
    removed = runner.invoke(app_cli(), ["suppressions", "remove", "User@Yahoo.com"])
    assert removed.exit_code == 0, removed.output
    with cli_db.session() as session:
        assert storage.suppressions(session) == []
    # Now an operator may add the address again.
    added = runner.invoke(app_cli(), ["subscribe", "user@yahoo.com", "--keywords", "agents"])
    assert added.exit_code == 0 and "active" in added.output


def test_an_operator_import_of_a_suppressed_address_is_refused(cli_db):
    sent_to(cli_db, cli_db.settings, "user@yahoo.com")
    complain(cli_db, "user@yahoo.com")
    refused = runner.invoke(app_cli(), ["subscribe", "user@yahoo.com", "--keywords", "agents"])
    assert refused.exit_code == 2 and "suppression list" in refused.output
    with cli_db.session() as session:
        assert storage.subscriber_by_email(session, "user@yahoo.com").state == "unsubscribed"


def test_fetch_without_a_mailbox_says_what_to_set(cli_db):
    result = runner.invoke(app_cli(), ["bounces", "fetch"])
    assert result.exit_code == 2 and "NEWSLETTER_BOUNCE_MAILBOX_URL" in result.output


def test_the_mailbox_is_fetched_every_five_minutes_in_both_modes_only_when_set(tmp_path):
    from newsletter.service import EmbeddedScheduler
    from workers.schedule import beat_schedule

    plain = load_settings(var_dir=tmp_path / "var", secret_key="k")
    assert "fetch-bounces" not in [job.name for job in schedule.jobs(plain)]
    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="k", bounce_mailbox_url="imaps://u:p@mx/INBOX"
    )
    (job,) = [job for job in schedule.jobs(settings) if job.name == "fetch-bounces"]
    assert job.step == "bounces" and job.when == schedule.Cron(minute="*/5")
    embedded = EmbeddedScheduler(db=None, settings=settings)  # type: ignore[arg-type]
    assert embedded.scheduler.get_job("fetch-bounces") is not None
    beat = beat_schedule(settings)["fetch-bounces"]
    assert beat["task"] == "workers.tasks.fetch_bounces"


@pytest.mark.parametrize(
    ("name", "value", "variable"),
    [
        ("bounce_address", "not an address", "NEWSLETTER_BOUNCE_ADDRESS"),
        ("bounce_address", "bounces+x@example.org", "NEWSLETTER_BOUNCE_ADDRESS"),
        ("bounce_mailbox_url", "http://mx.example.org/", "NEWSLETTER_BOUNCE_MAILBOX_URL"),
        (
            "bounce_mailbox_url",
            "imaps://u:topsecret@mx:99999/INBOX",
            "NEWSLETTER_BOUNCE_MAILBOX_URL",
        ),
        ("soft_bounce_threshold", "0", "NEWSLETTER_SOFT_BOUNCE_THRESHOLD"),
        ("soft_bounce_days", "0", "NEWSLETTER_SOFT_BOUNCE_DAYS"),
    ],
)
def test_a_bad_bounce_setting_names_its_variable(tmp_path, name, value, variable):
    with pytest.raises(ConfigError) as raised:
        load_settings(var_dir=tmp_path / "var", secret_key="k", **{name: value})
    assert variable in str(raised.value) and "topsecret" not in str(raised.value)


def app_cli():
    from newsletter.cli import app

    return app
