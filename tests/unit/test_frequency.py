"""Frequency choices: checked like every other choice, stored by the CLI, found due by the
ledger query on SQLite and PostgreSQL, and kept by migration 0010 for existing rows."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from newsletter import storage, subscriptions
from newsletter.cli import app
from newsletter.config import load_settings
from newsletter.db import Database, alembic_config, migrate
from newsletter.models import SKIPPED, Subscriber
from newsletter.planned import PlannedRow
from newsletter.subscriptions import SubscriptionError

runner = CliRunner()
NOW = datetime(2026, 6, 12, 9, 30)


def checked(**changes):
    values = {"keywords": "diffusion", "timezone": "UTC", "send_hour": 7, "digest_size": 10}
    return subscriptions.validate_preferences(**{**values, **changes})


def test_frequency_and_weekday_are_checked_with_the_rest():
    assert (checked().frequency, checked().send_weekday) == ("daily", 0)
    weekly = checked(frequency="weekly", send_weekday="6")
    assert (weekly.frequency, weekly.send_weekday) == ("weekly", 6)
    with pytest.raises(SubscriptionError) as caught:
        checked(frequency="hourly", send_weekday="7", send_hour="25")
    assert set(caught.value.errors) == {"frequency", "send_weekday", "send_hour"}
    assert "once a week" in caught.value.errors["frequency"]
    with pytest.raises(SubscriptionError, match="day of the week"):
        checked(send_weekday="Funday")


def add(session, settings, email, *, zone="UTC", frequency="daily", weekday=0, hour=7):
    return subscriptions.subscribe(
        session,
        settings,
        email=email,
        keywords="diffusion",
        now=NOW,
        timezone=zone,
        send_hour=hour,
        frequency=frequency,
        send_weekday=weekday,
        confirmed=True,
    ).id


def due_at(session, moment: datetime) -> dict[int, tuple[date, int]]:
    return {d.id: (d.edition, d.window_days) for d in storage.due_subscribers(session, moment)}


def test_who_is_due_on_a_friday_and_a_saturday(backend_db):
    db = backend_db
    settings = db.settings
    with db.session() as session:
        daily = add(session, settings, "d@example.org")
        weekdays = add(session, settings, "w@example.org", frequency="weekdays")
        saturday = add(session, settings, "s@example.org", frequency="weekly", weekday=5)
        later = add(session, settings, "l@example.org", frequency="weekly", weekday=5, hour=12)
        tokyo = add(session, settings, "t@example.org", zone="Asia/Tokyo", frequency="weekdays")
    with db.session() as session:
        friday = due_at(session, datetime(2026, 6, 12, 9, 0))  # Friday; 18:00 in Tokyo
        sat = due_at(session, datetime(2026, 6, 13, 9, 0))  # Saturday
    assert friday == {
        daily: (date(2026, 6, 12), 1),
        weekdays: (date(2026, 6, 12), 1),
        tokyo: (date(2026, 6, 12), 1),
    }
    # Saturday: no weekday digest; the weekly one is keyed by the week's Monday, and the
    # one whose hour has not come waits.
    assert sat == {daily: (date(2026, 6, 13), 1), saturday: (date(2026, 6, 8), 7)}
    assert later not in sat


def test_a_week_with_a_row_has_no_second_weekly_edition(backend_db):
    db = backend_db
    settings = db.settings
    with db.session() as session:
        reader = add(session, settings, "r@example.org", frequency="weekly", weekday=4)
        # A daily digest on Tuesday, before the reader chose weekly on Friday.
        storage.create_deliveries(
            session,
            [PlannedRow(reader, date(2026, 6, 9), SKIPPED)],
            datetime(2026, 6, 9, 7),
        )
    with db.session() as session:
        assert reader not in due_at(session, datetime(2026, 6, 12, 9))
        assert reader in due_at(session, datetime(2026, 6, 19, 9))  # the next Friday


def test_cli_subscribe_with_a_frequency(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "test-secret")
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    base = ["subscribe", "ada@example.org", "--keywords", "diffusion"]
    bad = runner.invoke(app, [*base, "--frequency", "hourly"])
    assert bad.exit_code != 0 and "frequency:" in bad.output
    bad = runner.invoke(app, [*base, "--frequency", "weekly", "--weekday", "Funday"])
    assert bad.exit_code != 0 and "send_weekday:" in bad.output
    db = Database(load_settings())
    with db.session() as session:
        assert session.scalars(select(Subscriber)).all() == []  # nothing stored
    ok = runner.invoke(app, [*base, "--frequency", "weekly", "--weekday", "monday"])
    assert ok.exit_code == 0, ok.output
    with db.session() as session:
        [ada] = session.scalars(select(Subscriber)).all()
        assert (ada.frequency, ada.send_weekday) == ("weekly", 0)
    db.dispose()
    status = runner.invoke(app, ["status", "--email", "ada@example.org"])
    assert "every Monday" in status.output


def test_migration_0010_keeps_existing_subscribers_and_editions(tmp_path):
    settings = load_settings(var_dir=tmp_path / "var", secret_key="test-secret")
    db = Database(settings)
    config = alembic_config(settings)
    migrate(config, db.engine, "0008")
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (id, email, state, keywords, timezone, send_hour,"
                " digest_size, show_trending, link_key, hard_failures, created_at)"
                " VALUES (1, 'a@example.org', 'active', 'x', 'UTC', 7, 10, true, 'k', 0, :now)"
            ),
            {"now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO deliveries (subscriber_id, edition, state, items, attempts,"
                " created_at) VALUES (1, '2026-06-12', 'sent', '[]', 1, :now)"
            ),
            {"now": NOW},
        )
    migrate(config, db.engine, "0010")
    with db.session() as session:
        subscriber = session.get(Subscriber, 1)
        assert (subscriber.frequency, subscriber.send_weekday) == ("daily", 0)
        # That day's edition is planned: not due again, and the row is as it was.
        assert storage.due_subscribers(session, datetime(2026, 6, 12, 20)) == []
        assert storage.due_subscribers(session, datetime(2026, 6, 13, 8))[0].edition == date(
            2026, 6, 13
        )
    migrate(config, db.engine, "0008", downgrade=True)
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM deliveries")).scalar_one() == 1
    db.dispose()


def test_the_forms_check_frequency_and_an_old_form_means_daily():
    from newsletter.web.forms import parse_preferences, parse_signup

    base = {"keywords": "diffusion", "timezone": "UTC", "send_hour": "7", "digest_size": "5"}
    bad = parse_signup({**base, "email": "a@example.org", "frequency": "hourly"})
    assert set(bad.errors) == {"frequency"} and bad.preferences is None
    assert bad.values["frequency"] == "hourly"  # shown again as typed
    weekly = parse_signup(
        {**base, "email": "a@example.org", "frequency": "weekly", "send_weekday": "0"}
    )
    assert weekly.preferences is not None
    assert (weekly.preferences.frequency, weekly.preferences.send_weekday) == ("weekly", 0)
    old_tab = parse_preferences(base)  # a settings page opened before the choice existed
    assert old_tab.preferences is not None and old_tab.preferences.frequency == "daily"


def test_two_planners_at_once_make_one_weekly_edition(backend_db):
    import threading

    from newsletter import pipeline
    from newsletter.models import Delivery
    from newsletter.paper import Paper

    db = backend_db
    monday = datetime(2026, 6, 15, 7)
    with db.session() as session:
        for n in range(20):
            add(session, db.settings, f"r{n}@example.org", frequency="weekly", weekday=0)
        papers = [
            Paper(id=f"2606.0000{n}", title=f"Diffusion {n}", published=date(2026, 6, 14))
            for n in range(5)
        ]
        storage.upsert_papers(session, papers, datetime(2026, 6, 14, 5))
    with db.session() as session:
        due = {row.id for row in storage.due_subscribers(session, monday)}
    assert len(due) == 20
    start = threading.Barrier(2)

    def planner():
        start.wait()
        pipeline.plan(db, db.settings, now=monday)

    threads = [threading.Thread(target=planner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db.session() as session:
        rows = session.execute(select(Delivery.subscriber_id, Delivery.edition)).all()
    assert sorted(rows) == sorted((i, date(2026, 6, 15)) for i in due)
