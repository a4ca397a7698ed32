"""Unconfirmed sign-ups are deleted once their confirmation link has expired, in both modes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter import storage, subscriptions
from newsletter.db import Database
from newsletter.models import ACTIVE, PAUSED, PENDING, UNSUBSCRIBED, Subscriber

HOURS = 48


def add(db: Database, email: str, state: str, *, age_hours: float, mailed_hours: float | None):
    """A subscriber created `age_hours` ago, last sent a confirmation `mailed_hours` ago."""
    now = storage.utcnow()
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, db.settings, email=email, keywords="agents", now=now
        )
        subscriber.state = state
        subscriber.created_at = now - timedelta(hours=age_hours)
        if mailed_hours is not None:
            subscriber.confirm_sent_at = now - timedelta(hours=mailed_hours)


def emails(db: Database) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(Subscriber.email)))


def fill(db: Database) -> None:
    add(db, "stale@example.org", PENDING, age_hours=HOURS + 1, mailed_hours=HOURS + 1)
    add(db, "never-mailed@example.org", PENDING, age_hours=HOURS + 1, mailed_hours=None)
    add(db, "fresh@example.org", PENDING, age_hours=1, mailed_hours=1)
    # Signed up long ago, asked for a new link an hour ago: that link still works.
    add(db, "asked-again@example.org", PENDING, age_hours=HOURS * 3, mailed_hours=1)
    for state in (ACTIVE, PAUSED, UNSUBSCRIBED):
        add(db, f"{state}@example.org", state, age_hours=HOURS * 10, mailed_hours=HOURS * 10)


KEPT = {
    "fresh@example.org",
    "asked-again@example.org",
    "active@example.org",
    "paused@example.org",
    "unsubscribed@example.org",
}


def test_only_pending_rows_past_the_window_are_deleted(backend_db):
    fill(backend_db)
    with backend_db.session() as session:
        assert storage.delete_expired_pending(session, storage.utcnow(), HOURS) == 2
    assert emails(backend_db) == KEPT
    with backend_db.session() as session:  # again: nothing more to do
        assert storage.delete_expired_pending(session, storage.utcnow(), HOURS) == 0


def test_the_embedded_scheduler_expires_pending_rows_hourly(db, settings):
    from apscheduler.triggers.cron import CronTrigger

    from newsletter.service import EmbeddedScheduler

    jobs = EmbeddedScheduler(db, settings)
    job = jobs.scheduler.get_job("expire-pending")
    assert job is not None and isinstance(job.trigger, CronTrigger)
    fields = {f.name: str(f) for f in job.trigger.fields}
    assert fields["minute"] == "20" and fields["hour"] == "*"
    fill(db)
    job.func()  # what the scheduler runs
    assert emails(db) == KEPT


@pytest.fixture
def eager(tmp_path, monkeypatch) -> Iterator[Database]:
    """workers.tasks configured from the environment as a worker is, running tasks inline."""
    from workers import celery_app, tasks

    values = {"VAR_DIR": tmp_path / "var", "SECRET_KEY": "k", "REDIS_URL": "redis://127.0.0.1:1/0"}
    for name, value in values.items():
        monkeypatch.setenv(f"NEWSLETTER_{name}", str(value))
    monkeypatch.setenv("NEWSLETTER_CONFIRM_HOURS", str(HOURS))
    celery_app.worker_settings.cache_clear()
    db = tasks.database()
    db.upgrade()
    celery_app.app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield db
    celery_app.app.conf.update(task_always_eager=False, task_eager_propagates=False)
    db.dispose()
    celery_app.worker_settings.cache_clear()


def test_the_beat_schedule_expires_pending_rows_hourly(eager):
    from workers import tasks
    from workers.celery_app import app
    from workers.schedule import beat_schedule

    entry = beat_schedule(eager.settings)["expire-pending"]
    assert entry["task"] == "workers.tasks.expire_pending" in app.tasks
    assert entry["schedule"].minute == {20} and entry["schedule"].hour == set(range(24))
    assert entry["options"]["queue"] == "plan"
    assert entry["options"]["expires"] < 3600  # a missed run never piles up behind the next
    fill(eager)
    assert tasks.expire_pending.apply().get() == {"deleted": 2}
    assert emails(eager) == KEPT
