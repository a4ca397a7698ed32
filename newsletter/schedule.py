"""When the service works: one schedule of neutral jobs that both modes translate.

The embedded scheduler (APScheduler, newsletter/service.py) and Celery beat
(workers/schedule.py) read the same list, so both collect, plan, sweep and catch up alike.
Every time is UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from newsletter.config import Settings

Step = Literal["collect", "plan", "sweep", "expire_pending", "confirmations", "bounces", "likes"]
# In embedded mode the web app's confirmation sender runs this step on its own thread, at the
# job's interval, so that `newsletter web` alone sends confirmation mails too.
RUN_BY_THE_WEB_APP: frozenset[Step] = frozenset({"confirmations"})


@dataclass(frozen=True)
class Cron:
    """Wall-clock times as crontab fields (UTC)."""

    minute: str
    hour: str = "*"
    day_of_week: str = "*"


@dataclass(frozen=True)
class Every:
    """A fixed interval."""

    seconds: float


@dataclass(frozen=True)
class Job:
    """One recurring piece of work: which pipeline step, with what arguments, when.

    `expires` is how long a run that could not start on time is still worth starting: a
    sleeping laptop or a busy queue runs the missed job once, never a pile of them.
    """

    name: str
    step: Step
    when: Cron | Every
    expires: float
    args: tuple[str, ...] = ()


# arXiv announces at 20:00 US Eastern, Sunday to Thursday: 00:00 UTC in summer and 01:00 UTC in
# winter, Monday to Friday in UTC. The listing takes a few minutes to appear in the feeds, so
# look twice after each possible hour; a conditional GET makes the extra looks cost a 304.
ARXIV_ANNOUNCEMENTS = Cron(minute="5,35", hour="0,1", day_of_week="mon-fri")
# Every source once an hour as well: a missed run, an outage or a late listing is caught up.
CATCH_UP = Cron(minute="50")
# Send hours are local hours in zones offset by 15-minute steps at the finest; every five
# minutes also gets a subscriber who just confirmed their first digest soon.
PLAN_EVERY = Cron(minute="*/5")
# Confirmation mails that failed are retried when due; a sign-up whose mail was never handed
# to a sender (a lost task, a restart) waits no longer than this.
CONFIRMATION_SWEEP = Every(10.0)
# Bounces and complaints are read from the bounce mailbox (when there is one) this often.
FETCH_BOUNCES = Cron(minute="*/5")
# Unconfirmed sign-ups whose confirmation link has expired are deleted hourly.
EXPIRE_PENDING = Cron(minute="20")
# Liked papers the database lacks are asked of arXiv this often (a pass with none is a query).
FETCH_LIKED_PAPERS = Every(30.0)


def collect_times(source: str, settings: Settings) -> Cron:
    """When a source publishes: arXiv at its announcements, Hugging Face through the day."""
    if source == "arxiv":
        return ARXIV_ANNOUNCEMENTS
    # Hugging Face Daily Papers grow through the day: the operator's collect hours.
    return Cron(minute="5", hour=",".join(settings.collect_hours))


def sweep_interval(settings: Settings) -> float:
    """Seconds between sweeps: often enough that a lost lease waits little past its expiry."""
    return max(5.0, min(60.0, settings.lease_seconds / 2))


def jobs(settings: Settings) -> list[Job]:
    """The whole schedule for these settings, the same in both modes."""
    schedule: list[Job] = []
    for source in settings.sources:
        schedule.append(
            Job(f"collect-{source}", "collect", collect_times(source, settings), 25 * 60, (source,))
        )
        schedule.append(Job(f"collect-{source}-catch-up", "collect", CATCH_UP, 50 * 60, (source,)))
    schedule.append(Job("plan-editions", "plan", PLAN_EVERY, 4 * 60))
    schedule.append(Job("expire-pending", "expire_pending", EXPIRE_PENDING, 50 * 60))
    schedule.append(Job("sweep-confirmations", "confirmations", CONFIRMATION_SWEEP, 10.0))
    schedule.append(Job("fetch-liked-papers", "likes", FETCH_LIKED_PAPERS, 60.0))
    if settings.bounce_mailbox_url:
        schedule.append(Job("fetch-bounces", "bounces", FETCH_BOUNCES, 4 * 60))
    interval = sweep_interval(settings)
    schedule.append(Job("sweep-leases", "sweep", Every(interval), interval))
    return schedule


def plan_interval_minutes() -> int:
    """Minutes between planning runs: how long a due digest can wait to be planned."""
    minute = PLAN_EVERY.minute
    return int(minute.removeprefix("*/")) if minute.startswith("*/") else 60


def first_digest_time(
    now: datetime, send_hour: int, zone: str, *, planned_today: bool = False
) -> datetime:
    """About when a subscriber's next digest is planned, in their zone (`now` is naive UTC).

    Planning runs every few minutes and takes everyone whose local send hour has come and
    whose digest for today is not planned yet. So someone who confirms in the evening, past
    their send hour, gets today's digest at the next run, not tomorrow morning.
    """
    local = now.replace(tzinfo=UTC).astimezone(ZoneInfo(zone))
    step = plan_interval_minutes()
    if not planned_today and local.hour >= send_hour:
        # The next planning run: the next multiple of the interval past the hour.
        next_run = (local.minute // step + 1) * step
        return local.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=next_run)
    day = local.date() if local.hour < send_hour else local.date() + timedelta(days=1)
    wall = datetime.combine(day, time(send_hour), tzinfo=ZoneInfo(zone))
    # A wall time skipped by a clock change: normalise through UTC.
    return wall.astimezone(UTC).astimezone(ZoneInfo(zone))
