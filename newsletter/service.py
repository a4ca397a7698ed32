"""The embedded service: the web app and an APScheduler scheduler driving the pipeline."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter import pipeline, schedule, storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.ranker import RecentPapers

log = logging.getLogger(__name__)


def trigger(job: schedule.Job) -> CronTrigger | IntervalTrigger:
    """A neutral time as APScheduler understands it (UTC)."""
    if isinstance(job.when, schedule.Every):
        return IntervalTrigger(seconds=job.when.seconds, timezone="UTC")
    cron = job.when
    return CronTrigger(
        minute=cron.minute, hour=cron.hour, day_of_week=cron.day_of_week, timezone="UTC"
    )


class EmbeddedScheduler:
    """The service's one schedule (newsletter/schedule.py) run by APScheduler in this process.

    One run of each job at a time (max_instances=1, coalesce), so a slow collect never
    overlaps itself and missed runs after a sleep are run once, not many times. Planning and
    sweeping both end in a delivery here (there are no queues to hand rows to); one lock keeps
    two deliveries from running side by side (an edition's renderer serves one at a time),
    and a sweep that finds one running leaves it the work. The scheduler owns what its runs
    share: the index of the recent papers (with the web pages, when given) and the edition
    renderers.
    The confirmation sweep is the one job this scheduler leaves out: the web app's own sender
    thread runs it (newsletter.confirmations), so mails go out wherever the app runs,
    `newsletter web` too.
    """

    def __init__(
        self, db: Database, settings: Settings, recent: RecentPapers | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.recent = recent or RecentPapers(db, settings)
        self.editions = pipeline.EditionCaches()
        self.stop = threading.Event()
        self._delivering = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        steps: dict[str, Callable[..., None]] = {
            "collect": self.collect,
            "plan": self.send,
            "sweep": self.sweep,
            "expire_pending": self.expire_pending,
            "bounces": self.fetch_bounces,
            "likes": self.fetch_liked_papers,
        }
        for job in schedule.jobs(settings):
            if job.step in schedule.RUN_BY_THE_WEB_APP:
                continue
            self.scheduler.add_job(
                steps[job.step],
                trigger(job),
                args=job.args,
                id=job.name,
                misfire_grace_time=int(job.expires),
            )

    def collect(self, source: str | None = None) -> None:
        try:
            pipeline.collect(
                self.db, self.settings, sources=[source] if source else None, stop=self.stop
            )
        except Exception:  # the service stays up; the next run tries again
            log.exception("collect failed")

    def expire_pending(self) -> None:
        """Delete the sign-ups whose confirmation link has expired (hourly)."""
        try:
            with self.db.session() as session:
                deleted = storage.delete_expired_pending(
                    session, storage.utcnow(), self.settings.confirm_hours
                )
            if deleted:
                log.info("expired %d unconfirmed sign-ups", deleted)
        except Exception:
            log.exception("expire pending sign-ups failed")

    def fetch_bounces(self) -> None:
        """Record the bounces and complaints waiting in the bounce mailbox."""
        from newsletter.bounces import mailbox

        try:
            report = mailbox.fetch(self.db, self.settings)
        except mailbox.MailboxError as exc:  # unreachable now: the next run tries again
            log.warning("%s", exc)
            return
        except Exception:
            log.exception("fetching bounces failed")
            return
        if report.messages:
            log.info("bounce mailbox: %s", report.as_dict())

    def fetch_liked_papers(self) -> None:
        """Fetch from arXiv the papers readers like that the database does not have yet."""
        from newsletter.likes.fetching import fetch_liked_papers

        try:
            fetch_liked_papers(self.db, self.settings, stop=self.stop)
        except Exception:  # the database is away: the next run tries again
            log.exception("fetching liked papers failed")

    def send(self) -> None:
        """Plan whoever is due, then deliver every ready digest."""
        if self.stop.is_set():
            return
        try:
            pipeline.plan(self.db, self.settings, recent=self.recent)
        except Exception:
            log.exception("plan failed")
        self._deliver(wait=True)

    def sweep(self) -> None:
        """Deliver retries that came due and rows whose sender's lease ran out."""
        self._deliver(wait=False)

    def _deliver(self, *, wait: bool) -> None:
        if self.stop.is_set() or not self._delivering.acquire(blocking=wait):
            return
        try:
            report = pipeline.deliver(
                self.db, self.settings, stop=self.stop, edition_caches=self.editions
            )
            if report.sent or report.retry or report.failed:
                log.info(
                    "deliver: %d sent, %d to retry, %d failed",
                    report.sent,
                    report.retry,
                    report.failed,
                )
        except Exception:
            log.exception("deliver failed")
        finally:
            self._delivering.release()

    def start(self) -> None:
        from datetime import UTC, datetime

        self.scheduler.start()
        # Plan and send, and collect every source, once soon after start-up rather than
        # waiting for the first tick.
        self.scheduler.modify_job("plan-editions", next_run_time=datetime.now(UTC))
        self.scheduler.add_job(self.collect, id="collect-now", next_run_time=datetime.now(UTC))

    def shutdown(self) -> None:
        """Stop taking work and wait for the running job; unsent claims go back to the ledger.

        `stop` set (as the first Ctrl-C does) cancels a collect's fetches at once and makes a
        delivery hand its unsent claims back after the message in flight.
        """
        self.stop.set()
        self.scheduler.shutdown(wait=True)


def web_server(settings: Settings, app: Any, *, log_level: str = "info") -> Any:
    """The uvicorn server for the web app, listening where the settings say."""
    from newsletter.web.protocol import OneLineH11Protocol

    return _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            # uvicorn's loggers go to ours: one format, and the access log's paths, which
            # carry signed tokens, pass through the redaction like every other line.
            log_config=None,
            http=OneLineH11Protocol,
            # The app reads X-Forwarded-For itself, from NEWSLETTER_TRUSTED_PROXIES only:
            # uvicorn's default would believe any value sent from loopback.
            proxy_headers=False,
            # A request still running at a stop gets this long: the whole stop takes 2 s.
            timeout_graceful_shutdown=1,
        )
    )


class _Server(uvicorn.Server):
    """uvicorn's server; when `own_signals`, the caller's signal handlers stay in place."""

    own_signals = False

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.own_signals:
            yield
            return
        with super().capture_signals():
            yield


# Seconds from the first SIGINT/SIGTERM to the end of the process, whatever is still running.
STOP_SECONDS = 1.5


class _Stopping:
    """What SIGINT and SIGTERM do to `serve`: the first stops it, a second quits at once.

    The first tells uvicorn to stop, cancels the fetches of a collect in flight and makes a
    delivery hand back its unsent claims (the scheduler's stop event); a watchdog ends the
    process STOP_SECONDS later if something (a plan, a message being sent, a connect) still
    runs. Its work is not lost: a collect or plan runs again, a claimed digest is sent after
    its lease expires, with the same Message-ID.
    """

    def __init__(self, server: Any, jobs: EmbeddedScheduler | None) -> None:
        self.server = server
        self.jobs = jobs
        self.signals: list[int] = []

    def handle(self, number: int, _frame: Any = None) -> None:
        self.signals.append(number)
        if len(self.signals) > 1:
            log.warning("quitting at once")
            _quit(130)
        log.info("stopping… (press Ctrl-C again to quit at once)")
        self.server.should_exit = True
        if self.jobs is not None:
            self.jobs.stop.set()
        threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        time.sleep(STOP_SECONDS)
        running = ", ".join(t.name for t in threading.enumerate() if not t.daemon)
        log.warning(
            "still stopping after %.1f s (%s): quitting without waiting; unfinished work is "
            "done again after the restart",
            STOP_SECONDS,
            running,
        )
        _quit(1)


def _quit(status: int) -> None:
    """End the process now (threads stuck in a socket call cannot be joined), logs flushed."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve(settings: Settings, *, scheduler: bool = True, demo: bool = False) -> None:
    """Run the whole embedded service in this process until SIGINT/SIGTERM."""
    from newsletter import logs
    from newsletter.web.app import create_app

    if not logging.getLogger().handlers:  # not started by the CLI, which configured them
        logs.configure()
    logs.install_redaction()

    db = Database(settings)
    db.upgrade()
    if demo:
        path = run_demo(db, settings)
        if path is None:
            log.info("demo digest sent by SMTP to %s", DEMO_EMAIL)
        else:
            log.info("demo digest written to %s", path)
    # One index of the recent papers for the pages and the planner of this process.
    recent = RecentPapers(db, settings)
    jobs = EmbeddedScheduler(db, settings, recent) if scheduler else None
    server = web_server(settings, create_app(settings, db=db, recent=recent))
    # These handlers, not uvicorn's, see every SIGINT/SIGTERM: the first starts the stop at
    # once (fetches cancelled, deliveries handed back), a second one quits.
    server.own_signals = True
    stopping = _Stopping(server, jobs)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopping.handle)
    if jobs:
        jobs.start()
    log.info("serving on http://%s:%d/", settings.host, settings.port)
    try:
        server.run()
    finally:
        if jobs:
            jobs.shutdown()
        db.dispose()
        if stopping.signals:
            log.info("stopped cleanly")
            # Everything is closed: the interpreter's teardown of numpy, scipy, lxml and a
            # large heap would add seconds to a stop for nothing.
            _quit(0)


DEMO_EMAIL = "demo@example.org"
DEMO_KEYWORDS = 'large language models, "reinforcement learning", agents, diffusion, -medical'


def run_demo(db: Database, settings: Settings) -> Path | None:
    """Load the bundled day, add a confirmed demo subscriber and deliver their digest now.

    Only the demo subscriber's edition is planned. Returns the .eml path in the outbox (the
    existing one when the demo already ran today), or None when SMTP is configured.
    """
    from newsletter import storage, subscriptions

    pipeline.load_demo_day(db)
    now = storage.utcnow()
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, settings, email=DEMO_EMAIL, keywords=DEMO_KEYWORDS, now=now, confirmed=True
        )
        due = storage.DueSubscriber(
            subscriber.id, subscriber.keywords, subscriber.digest_size, now.date()
        )
    rows = pipeline.rank_for(db, settings, [due], now=now)
    with db.session() as session:
        storage.create_deliveries(session, rows, now)
        ids = storage.delivery_ids_for(session, due.id, due.edition)
    report = pipeline.deliver(db, settings, now=now, ids=ids)
    if report.paths:
        return Path(report.paths[0])
    if settings.smtp_url:
        return None
    sent = sorted(settings.outbox_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime)
    return next((p for p in reversed(sent) if DEMO_EMAIL in p.read_text(errors="replace")), None)
