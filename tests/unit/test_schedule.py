"""One schedule, two translations: APScheduler and Celery beat fire at the same times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from newsletter import schedule
from newsletter.config import load_settings
from newsletter.service import EmbeddedScheduler, trigger

START = datetime(2026, 12, 4, 22, 17, tzinfo=UTC)  # a Friday evening: a weekend follows


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        var_dir=tmp_path / "var", secret_key="k", sources="hf_daily,arxiv", lease_seconds=120
    )


def apscheduler_times(job: schedule.Job, count: int) -> list[datetime]:
    times, previous, now = [], None, START
    fire = trigger(job)
    for _ in range(count):
        nxt = fire.get_next_fire_time(previous, now)
        times.append(nxt)
        previous, now = nxt, nxt + timedelta(microseconds=1)
    return times


def beat_times(job: schedule.Job, count: int) -> list[datetime]:
    """The minutes beat's crontab matches after START (day_of_week counts from Sunday = 0)."""
    from workers.schedule import when

    entry = when(job)
    times, t = [], START.replace(second=0) + timedelta(minutes=1)
    while len(times) < count:
        if (
            t.minute in entry.minute
            and t.hour in entry.hour
            and t.isoweekday() % 7 in entry.day_of_week
        ):
            times.append(t)
        t += timedelta(minutes=1)
    return times


def test_both_modes_run_the_same_jobs(settings):
    from workers.schedule import beat_schedule

    names = [job.name for job in schedule.jobs(settings)]
    embedded = EmbeddedScheduler.__new__(EmbeddedScheduler)
    EmbeddedScheduler.__init__(embedded, db=None, settings=settings)  # type: ignore[arg-type]
    web_app = [
        job.name for job in schedule.jobs(settings) if job.step in schedule.RUN_BY_THE_WEB_APP
    ]
    assert web_app == ["sweep-confirmations"]
    embedded_jobs = [job.id for job in embedded.scheduler.get_jobs()]
    assert sorted(embedded_jobs + web_app) == sorted(names)
    assert sorted(beat_schedule(settings)) == sorted(names)
    from newsletter.confirmations import SWEEP_SECONDS

    assert schedule.CONFIRMATION_SWEEP.seconds == SWEEP_SECONDS
    # The catch-up the settings promise, in both modes.
    assert {"collect-arxiv-catch-up", "collect-hf_daily-catch-up"} <= set(names)


@pytest.mark.parametrize(
    "name", ["collect-arxiv", "collect-hf_daily", "collect-arxiv-catch-up", "plan-editions"]
)
def test_cron_jobs_fire_at_the_same_times_in_both_modes(settings, name):
    (job,) = [job for job in schedule.jobs(settings) if job.name == name]
    embedded = apscheduler_times(job, 12)
    assert embedded == beat_times(job, 12)
    assert all(t > START for t in embedded)


def test_arxiv_is_collected_after_each_announcement_only(settings):
    (job,) = [job for job in schedule.jobs(settings) if job.name == "collect-arxiv"]
    times = apscheduler_times(job, 4)
    # Friday night, then nothing before Monday 00:05 UTC (Sunday 20:00 US Eastern in summer).
    assert times[0] == datetime(2026, 12, 7, 0, 5, tzinfo=UTC)
    assert {t.hour for t in times} == {0, 1} and {t.minute for t in times} == {5, 35}


def test_the_sweep_runs_well_within_a_lease(settings):
    (job,) = [job for job in schedule.jobs(settings) if job.step == "sweep"]
    from workers.schedule import when

    assert job.when == schedule.Every(60.0) and when(job) == timedelta(seconds=60)
    first, second = apscheduler_times(job, 2)
    assert second - first == timedelta(seconds=60)
