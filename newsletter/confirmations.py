"""Confirmation mails, sent in the background: the sign-up page only queues them.

The page does the same work for every address (one queued request), so neither its answer nor
its timing says whether an address is known; a slow or failing relay never holds a request.
A sender claims each request with a lease, decides whether a mail is due (at most one link
per address per CONFIRM_RESEND_AFTER, at most NEWSLETTER_CONFIRM_MAILS_PER_HOUR in all),
sends it, and stamps `confirm_sent_at` only once the relay accepted it; a failed send is
retried with a backoff. Embedded mode runs ConfirmationSender threads in the web process;
the distributed mode's Celery workers call send_confirmations() for the ids the web queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from newsletter import storage, subscriptions
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.mail import PermanentSendError, SendError
from newsletter.models import FAILED, QUEUED, RETRY, Subscriber
from newsletter.schedule import CONFIRMATION_SWEEP
from newsletter.storage import ConfirmationClaim
from newsletter.web.mail import send_confirmation
from newsletter.web.ratelimit import MemoryRateLimiter, RateLimiter

log = logging.getLogger(__name__)

# A new link is mailed at most this often per address, however often it is entered.
CONFIRM_RESEND_AFTER = timedelta(minutes=2)
# Longer than any one send can take (SMTP timeouts included): a claim outlives its sender only
# when the sender died, and then another sender takes the request over.
LEASE = timedelta(minutes=5)
RETRY_AT_MOST_AFTER = timedelta(hours=1)
GLOBAL_KEY = "confirm:all"
SEND_TASK = "workers.tasks.send_confirmation"  # by name: the core never imports workers/
# The embedded sender looks for due retries this often: the schedule's confirmation sweep.
SWEEP_SECONDS = CONFIRMATION_SWEEP.seconds


@dataclass
class ConfirmationReport:
    """What one pass did: mails sent, requests with no mail due, deferred, to retry, failed."""

    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    retry: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def as_dict(self) -> dict[str, int]:
        names = ("sent", "skipped", "deferred", "retry", "failed")
        return {name: getattr(self, name) for name in names}


def send_confirmations(
    db: Database,
    settings: Settings,
    limiter: RateLimiter,
    *,
    now: datetime | None = None,
    ids: Sequence[int] | None = None,
    limit: int = 100,
    pool: ThreadPoolExecutor | None = None,
) -> ConfirmationReport:
    """Claim the due requests (or only `ids`) and handle each; one bad row never stops the rest.

    With `pool`, the mails of a batch are sent side by side on its threads.
    """
    now = now or storage.utcnow()
    with db.session() as session:
        claims = storage.claim_confirmations(session, now, LEASE, ids=ids, limit=limit)
    report = ConfirmationReport()
    if pool is None:
        outcomes = [send_one(db, settings, limiter, claim, now) for claim in claims]
    else:
        outcomes = list(pool.map(lambda c: send_one(db, settings, limiter, c, now), claims))
    for outcome in outcomes:
        report.add(outcome)
    return report


def send_one(
    db: Database, settings: Settings, limiter: RateLimiter, claim: ConfirmationClaim, now: datetime
) -> str:
    """Handle one claimed request; returns the outcome (a ConfirmationReport field name)."""
    try:
        subscriber = _register(db, settings, limiter, claim, now)
        if isinstance(subscriber, str):
            return subscriber
        send_confirmation(settings, subscriber, now=now)
    except SendError as exc:
        return _give_back(
            db, settings, claim, now, exc, permanent=isinstance(exc, PermanentSendError)
        )
    except subscriptions.SubscriptionError as exc:  # values no longer valid: nothing to send
        return _give_back(db, settings, claim, now, exc, permanent=True)
    except Exception as exc:  # our fault (database, a bug): logged, and tried again later
        log.exception("confirmation request %d failed", claim.id)
        return _give_back(db, settings, claim, now, exc, permanent=False)
    with db.session() as session:
        storage.mark_confirmation_sent(session, claim, subscriber.id, now)
    return "sent"


def _register(
    db: Database, settings: Settings, limiter: RateLimiter, claim: ConfirmationClaim, now: datetime
) -> Subscriber | str:
    """Add or find the subscriber; the subscriber to mail now, or why no mail goes out."""
    with db.session() as session:
        subscriber = subscriptions.register_sign_up(session, claim, now)
        last = subscriber.confirm_sent_at
        if last is not None and last > now - CONFIRM_RESEND_AFTER:
            storage.finish_confirmation(session, claim)  # the link sent moments ago still works
            return "skipped"
        decision = limiter.hit(GLOBAL_KEY, settings.confirm_mails_per_hour, 3600)
        if not decision.allowed:
            # Past the hourly cap the mail waits for the next hour, without counting as a try.
            later = now + timedelta(seconds=decision.retry_after)
            storage.retry_confirmation(
                session,
                claim,
                state=QUEUED,
                next_attempt_at=later,
                error=None,
                attempts=claim.attempts - 1,
            )
            return "deferred"
    return subscriber


def _give_back(
    db: Database,
    settings: Settings,
    claim: ConfirmationClaim,
    now: datetime,
    exc: Exception,
    *,
    permanent: bool,
) -> str:
    if permanent or claim.attempts >= settings.max_attempts:
        log.warning("confirmation request %d failed for good: %s", claim.id, exc)
        state, later = FAILED, None
    else:
        log.info("confirmation request %d to retry: %s", claim.id, exc)
        state, later = RETRY, now + backoff(settings, claim.attempts)
    with db.session() as session:
        storage.retry_confirmation(
            session, claim, state=state, next_attempt_at=later, error=str(exc)[:500]
        )
    return "failed" if state == FAILED else "retry"


def backoff(settings: Settings, attempts: int) -> timedelta:
    """The wait after `attempts` tries: doubling from retry_base_seconds, an hour at most."""
    seconds = settings.retry_base_seconds * 2 ** max(0, attempts - 1)
    return min(timedelta(seconds=seconds), RETRY_AT_MOST_AFTER)


# Who sends: threads in the web process (embedded) or Celery workers (distributed) -----------


class ConfirmationQueue(Protocol):
    """What the sign-up page tells once a request is committed, and the app's start and stop."""

    def wake(self, request_id: int) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def flush(self) -> None: ...


class ConfirmationSender:
    """The embedded mode's sender: a thread woken by each sign-up, and every few seconds.

    Mails are sent `confirm_mail_senders` at a time. `settings` and `clock` are read on each
    pass (the web app's, which tests change).
    """

    def __init__(
        self,
        db: Database,
        settings: Callable[[], Settings],
        clock: Callable[[], datetime] = storage.utcnow,
        interval: float = SWEEP_SECONDS,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.interval = interval
        # The cap follows this sender's clock; in one process, counters in memory are shared.
        self.limiter = MemoryRateLimiter(clock=lambda: self.clock().replace(tzinfo=UTC).timestamp())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pass_lock = threading.Lock()
        self._users_lock = threading.Lock()
        self._users = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def wake(self, request_id: int) -> None:
        """A request was queued: send it now rather than at the next sweep."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread; each start() needs its stop() (an app may be started twice)."""
        with self._users_lock:
            self._users += 1
            if self._thread is not None:
                return
            self._stop.clear()
            self._pool = ThreadPoolExecutor(
                self.settings().confirm_mail_senders, thread_name_prefix="confirm-mail"
            )
            self._thread = threading.Thread(target=self._run, name="confirm-sender", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after the mails being sent; what is still queued is sent after a restart."""
        with self._users_lock:
            self._users -= 1
            if self._users > 0 or self._thread is None:
                return
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=60)
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._thread = self._pool = None

    def flush(self) -> None:
        """Send everything due now, in this thread, after any pass under way (tests, tools)."""
        self._pass(until_stopped=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._pass()
            except Exception:  # the database is away: the next sweep tries again
                log.exception("confirmation sender pass failed")

    def _pass(self, *, until_stopped: bool = True) -> None:
        # One pass at a time: a request is claimed by one pass, and flush() returns only
        # once nothing due is left, in flight or not.
        with self._pass_lock:
            while not (until_stopped and self._stop.is_set()):
                settings = self.settings()
                report = send_confirmations(
                    self.db,
                    settings,
                    self.limiter,
                    now=self.clock(),
                    limit=4 * settings.confirm_mail_senders,
                    pool=self._pool,
                )
                if not any(report.as_dict().values()):  # nothing was due
                    return


class CeleryConfirmationQueue:
    """The distributed mode's: each request becomes a task on the `mail` queue.

    A task that cannot be published (Redis away) is not lost: the workers' periodic sweep
    finds the request in the database.
    """

    def __init__(self, settings: Settings) -> None:
        from celery import Celery

        self._app = Celery("newsletter-web", broker=settings.redis_url, set_as_current=False)
        self._app.conf.update(
            # A Redis that is away costs a sign-up a moment, not seconds: no reconnect loop.
            broker_transport_options={
                "socket_timeout": 2,
                "socket_connect_timeout": 1,
                "max_retries": 0,
                "interval_start": 0,
            },
            broker_connection_retry_on_startup=False,
            task_serializer="json",
            accept_content=["json"],
        )

    def wake(self, request_id: int) -> None:
        try:
            self._app.send_task(SEND_TASK, args=(request_id,), queue="mail", retry=False)
        except Exception as exc:
            log.warning("confirmation %d not queued (the sweep will send it): %s", request_id, exc)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._app.close()

    def flush(self) -> None:
        pass


def make_confirmation_queue(
    db: Database, settings: Callable[[], Settings], clock: Callable[[], datetime]
) -> ConfirmationQueue:
    """Celery tasks when NEWSLETTER_REDIS_URL is set, else a sender thread in this process."""
    current = settings()
    if current.distributed:
        return CeleryConfirmationQueue(current)
    return ConfirmationSender(db, settings, clock)
