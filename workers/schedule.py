"""Celery beat's translation of the service's one schedule (newsletter/schedule.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from newsletter.config import Settings
from newsletter.schedule import Cron, Every, Job, jobs

# The task and queue that run each step of the schedule.
TASKS = {
    "collect": ("workers.tasks.collect_source", "collect"),
    "plan": ("workers.tasks.plan_editions", "plan"),
    "sweep": ("workers.tasks.sweep_leases", "plan"),
    "expire_pending": ("workers.tasks.expire_pending", "plan"),
    "confirmations": ("workers.tasks.sweep_confirmations", "plan"),
    "bounces": ("workers.tasks.fetch_bounces", "plan"),
    "likes": ("workers.tasks.fetch_liked_papers", "collect"),
}


def when(job: Job) -> crontab | timedelta:
    """A neutral time as beat understands it."""
    if isinstance(job.when, Every):
        return timedelta(seconds=job.when.seconds)
    cron: Cron = job.when
    return crontab(minute=cron.minute, hour=cron.hour, day_of_week=cron.day_of_week)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The beat schedule; every entry expires before it could pile up behind itself."""
    schedule: dict[str, dict[str, Any]] = {}
    for job in jobs(settings):
        task, queue = TASKS[job.step]
        schedule[job.name] = {
            "task": task,
            "schedule": when(job),
            "args": job.args,
            "options": {"queue": queue, "expires": job.expires},
        }
    return schedule
