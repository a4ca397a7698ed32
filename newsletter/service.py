"""The embedded service: the web app and an APScheduler scheduler driving the pipeline."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from newsletter import pipeline
from newsletter.config import Settings
from newsletter.db import Database

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    """Collect on a schedule; plan and deliver every few minutes for whoever is due.

    One job of each kind at a time (max_instances=1, coalesce), so a slow collect never
    overlaps itself and missed runs after a sleep are run once, not many times. Confirmation
    mails are not among these jobs: the web app's own sender thread sends them (see
    newsletter.confirmations), so they go out wherever the app runs, `newsletter web` too.
    """

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.stop = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        hours = ",".join(settings.collect_hours)
        self.scheduler.add_job(self.collect, CronTrigger(hour=hours, minute=5), id="collect")
        self.scheduler.add_job(self.send, IntervalTrigger(minutes=5), id="send", next_run_time=None)

    def collect(self) -> None:
        try:
            pipeline.collect(self.db, self.settings)
        except Exception:  # the service stays up; the next run tries again
            log.exception("collect failed")

    def send(self) -> None:
        if self.stop.is_set():
            return
        try:
            pipeline.plan(self.db, self.settings)
            report = pipeline.deliver(self.db, self.settings, stop=self.stop)
            if report.sent or report.retry or report.failed:
                log.info(
                    "deliver: %d sent, %d to retry, %d failed",
                    report.sent,
                    report.retry,
                    report.failed,
                )
        except Exception:
            log.exception("plan/deliver failed")

    def start(self) -> None:
        from datetime import UTC, datetime

        self.scheduler.start()
        # Collect and send once soon after start-up rather than waiting for the first tick.
        self.scheduler.modify_job("send", next_run_time=datetime.now(UTC))
        self.scheduler.add_job(self.collect, id="collect-now", next_run_time=datetime.now(UTC))

    def shutdown(self) -> None:
        """Stop taking work and wait for the running job; unsent claims go back to the ledger."""
        self.stop.set()
        self.scheduler.shutdown(wait=True)


def web_server(settings: Settings, app: Any, *, log_level: str = "info") -> Any:
    """The uvicorn server for the web app, listening where the settings say."""
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=log_level,
            # The app reads X-Forwarded-For itself, from NEWSLETTER_TRUSTED_PROXIES only:
            # uvicorn's default would believe any value sent from loopback.
            proxy_headers=False,
        )
    )


def serve(settings: Settings, *, scheduler: bool = True, demo: bool = False) -> None:
    """Run the whole embedded service in this process until SIGINT/SIGTERM."""
    from newsletter.web.app import create_app

    db = Database(settings)
    db.upgrade()
    if demo:
        path = run_demo(db, settings)
        log.info("demo digest written to %s", path)
    jobs = EmbeddedScheduler(db, settings) if scheduler else None
    server = web_server(settings, create_app(settings, db=db))
    if jobs:
        jobs.start()
    log.info("serving on http://%s:%d/", settings.host, settings.port)
    # uvicorn handles SIGINT/SIGTERM itself, then re-raises the signal through the handlers it
    # found installed; these record it, so the scheduler below still gets its clean stop.
    stopped_by: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: stopped_by.append(number))
    try:
        server.run()
    finally:
        if jobs:
            jobs.shutdown()
        db.dispose()
        if stopped_by:
            log.info("stopped cleanly")


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
