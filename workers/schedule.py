"""The whole beat schedule of the distributed mode: when to collect, plan and sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from newsletter.config import Settings

# arXiv announces at 20:00 US Eastern, Sunday to Thursday: 00:00 UTC in summer and 01:00 UTC in
# winter, Monday to Friday in UTC. The listing takes a few minutes to appear in the feeds, so
# look twice after each possible hour; a conditional GET makes the extra looks cost a 304.
ARXIV_ANNOUNCEMENTS = crontab(minute="5,35", hour="0,1", day_of_week="mon-fri")
# Every source once an hour as well: a missed run, an outage or a late listing is caught up.
CATCH_UP = crontab(minute=50)
# Confirmation mails that failed are retried when due; a sign-up whose task was lost waits
# no longer than this.
CONFIRMATION_SWEEP_SECONDS = 10.0
# Subscribers' send hours are local hours; zones are offset by 15-minute steps at the finest.
PLAN_EVERY = crontab(minute="*/15")


def collect_times(source: str, settings: Settings) -> crontab:
    """When a source publishes: arXiv at its announcements, Hugging Face through the day."""
    if source == "arxiv":
        return ARXIV_ANNOUNCEMENTS
    # Hugging Face Daily Papers grow through the day; the operator's collect hours (the same
    # as the embedded mode's) plus the hourly catch-up follow them.
    return crontab(minute=5, hour=",".join(settings.collect_hours))


def sweep_interval(settings: Settings) -> float:
    """Seconds between sweeps: often enough that a lost lease waits little past its expiry."""
    return max(5.0, min(60.0, settings.lease_seconds / 2))


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The beat schedule for the enabled sources; every entry expires before it repeats."""
    schedule: dict[str, dict[str, Any]] = {}
    for source in settings.sources:
        schedule[f"collect-{source}"] = {
            "task": "workers.tasks.collect_source",
            "schedule": collect_times(source, settings),
            "args": (source,),
            "options": {"queue": "collect", "expires": 25 * 60},
        }
        schedule[f"collect-{source}-catch-up"] = {
            "task": "workers.tasks.collect_source",
            "schedule": CATCH_UP,
            "args": (source,),
            "options": {"queue": "collect", "expires": 50 * 60},
        }
    schedule["plan-editions"] = {
        "task": "workers.tasks.plan_editions",
        "schedule": PLAN_EVERY,
        "options": {"queue": "plan", "expires": 14 * 60},
    }
    interval = sweep_interval(settings)
    schedule["sweep-leases"] = {
        "task": "workers.tasks.sweep_leases",
        "schedule": timedelta(seconds=interval),
        "options": {"queue": "plan", "expires": interval},
    }
    schedule["sweep-confirmations"] = {
        "task": "workers.tasks.sweep_confirmations",
        "schedule": timedelta(seconds=CONFIRMATION_SWEEP_SECONDS),
        "options": {"queue": "plan", "expires": CONFIRMATION_SWEEP_SECONDS},
    }
    return schedule
