"""Celery tasks: thin wrappers that hand ids to the pipeline steps, never objects."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from newsletter import confirmations, pipeline, storage
from newsletter.db import Database
from newsletter.ranker import RecentPapers
from newsletter.web.ratelimit import RateLimiter, make_rate_limiter
from workers.celery_app import RETRY_BACKOFF_MAX, app, worker_settings

log = logging.getLogger(__name__)

# Errors that pass: the database or the broker restarting, a lock held a little too long.
# Anything else is a bug or bad data, and retrying it would only repeat it. Transient SMTP
# failures are not here: the pipeline records them in the ledger as `retry` with a backoff,
# and the sweeper hands those rows back to the workers when they are due.
TRANSIENT: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
RETRYING: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": RETRY_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": 8,
}
# A batch stops itself between two messages once it has sent for settings.batch_seconds, gives
# its unsent rows back and queues them again. Celery's limits are only a backstop for a batch
# stuck inside one message: an exception there could interrupt a message the relay then
# delivers, so they sit well past the batch's own deadline (the SMTP timeout is 30 s).
BATCH_SOFT_LIMIT = worker_settings().batch_seconds + 60
BATCH_HARD_LIMIT = BATCH_SOFT_LIMIT + 30

_db: Database | None = None


def database() -> Database:
    """This process's database (engines must not cross a fork, so each process makes its own)."""
    global _db
    if _db is None or _db.settings is not worker_settings():
        if _db is not None:  # the settings were read again (tests do): drop the old engine
            _db.dispose()
        _db = Database(worker_settings())
    return _db


class _Shared(NamedTuple):
    db: Database
    recent: RecentPapers
    editions: pipeline.EditionCaches


_shared: _Shared | None = None


def shared() -> _Shared:
    """What this process's tasks share: the recent papers' index and the edition renderers."""
    global _shared
    db = database()
    if _shared is None or _shared.db is not db:
        _shared = _Shared(db, RecentPapers(db, db.settings), pipeline.EditionCaches())
    return _shared


_limiter: tuple[Any, RateLimiter] | None = None


def confirmation_limiter() -> RateLimiter:
    """The hourly cap on confirmation mails, counted in Redis by every worker together."""
    global _limiter
    if _limiter is None or _limiter[0] is not worker_settings():
        _limiter = (worker_settings(), make_rate_limiter(worker_settings()))
    return _limiter[1]


@worker_process_init.connect
def _forget_parent_database(**_: Any) -> None:
    global _db, _shared, _limiter
    _db = _shared = None
    _limiter = None


@app.task(**RETRYING)
def collect_source(name: str) -> dict[str, Any]:
    """Fetch one source and store its papers (one recorded source run)."""
    (report,) = pipeline.collect(database(), worker_settings(), sources=[name])
    return {"source": name, "outcome": report.outcome, "new": report.new, "error": report.error}


@app.task(**RETRYING)
def plan_editions() -> dict[str, int]:
    """Plan every edition that is due, queueing its digests in batches as the plan is written.

    Each chunk of rows is queued once plan() has committed it, so workers start sending while
    the rest is written. The last fan-out covers every due row, not only this plan's: rows
    whose tasks were lost (a broker restarted without its data) are queued again, and a
    duplicate task sends nothing.
    """
    queued: set[int] = set()
    batches = [0]
    last = [0]  # the highest id queued by a chunk: each chunk reads only the rows after it

    def fan_out(_written: int = 0, *, everything: bool = False) -> None:
        with database().session() as session:
            due = storage.due_delivery_ids(
                session, storage.utcnow(), after=0 if everything else last[0]
            )
        fresh = [i for i in due if i not in queued]
        batches[0] += enqueue_deliveries(fresh)
        queued.update(fresh)
        if due:
            last[0] = max(last[0], due[-1])  # ordered by id

    report = pipeline.plan(database(), worker_settings(), progress=fan_out, recent=shared().recent)
    fan_out(everything=True)
    return {
        "due": report.due,
        "planned": report.planned,
        "waiting": report.waiting,
        "queued": len(queued),
        "batches": batches[0],
    }


@app.task(
    **RETRYING,
    soft_time_limit=BATCH_SOFT_LIMIT,
    time_limit=BATCH_HARD_LIMIT,
)
def deliver_batch(delivery_ids: list[int]) -> dict[str, int]:
    """Claim and send these digests over one SMTP connection; rows already claimed are skipped.

    After settings.batch_seconds the batch stops between two messages, gives the rest back to
    the ledger and queues itself again; the rows it sent are skipped by the next run.
    """
    settings = worker_settings()
    out_of_time = threading.Event()
    timer = threading.Timer(settings.batch_seconds, out_of_time.set)
    timer.daemon = True
    timer.start()
    try:
        report = pipeline.deliver(
            database(),
            settings,
            ids=delivery_ids,
            stop=out_of_time,
            edition_caches=shared().editions,
        )
    except SoftTimeLimitExceeded:
        # Stuck inside one message past the deadline: the pipeline has given the unsent rows
        # back to the ledger; queue them again.
        log.warning("deliver_batch: stuck past its time limit; queueing the batch again")
        deliver_batch.apply_async(args=(delivery_ids,))
        return {"sent": 0, "requeued": len(delivery_ids)}
    finally:
        timer.cancel()
    result = {"sent": report.sent, "retry": report.retry, "failed": report.failed}
    if out_of_time.is_set():
        log.info(
            "deliver_batch: %d sent in %.0f s; queueing the rest again",
            report.sent,
            settings.batch_seconds,
        )
        deliver_batch.apply_async(args=(delivery_ids,))
        result["requeued"] = report.released
    return result


@app.task(**RETRYING)
def sweep_leases() -> dict[str, int]:
    """Queue the rows no task holds: expired leases of lost workers and retries now due."""
    with database().session() as session:
        ids = storage.stale_delivery_ids(session, storage.utcnow())
    return {"queued": len(ids), "batches": enqueue_deliveries(ids)}


@app.task(**RETRYING)
def expire_pending() -> dict[str, int]:
    """Delete the sign-ups never confirmed whose confirmation link has expired."""
    with database().session() as session:
        deleted = storage.delete_expired_pending(
            session, storage.utcnow(), worker_settings().confirm_hours
        )
    return {"deleted": deleted}


@app.task(**RETRYING)
def fetch_bounces() -> dict[str, Any]:
    """Record the bounces and complaints waiting in the bounce mailbox; delete what was."""
    from newsletter.bounces import mailbox

    try:
        report = mailbox.fetch(database(), worker_settings())
    except mailbox.MailboxError as exc:  # unreachable now: the next five minutes try again
        log.warning("%s", exc)
        return {"error": str(exc)}
    return report.as_dict()


def enqueue_deliveries(ids: Sequence[int]) -> int:
    """Queue deliver_batch tasks over `ids`, settings.batch_size at a time; returns how many."""
    size = worker_settings().batch_size
    batches = [list(ids[start : start + size]) for start in range(0, len(ids), size)]
    for batch in batches:
        deliver_batch.apply_async(args=(batch,))
    return len(batches)


@app.task(**RETRYING)
def send_confirmation(request_id: int) -> dict[str, int]:
    """Send the confirmation mail a sign-up queued, if one is due; a duplicate task is a no-op.

    A failed send is recorded on the request (retry, with a backoff) and picked up again by
    sweep_confirmations when it is due.
    """
    report = confirmations.send_confirmations(
        database(), worker_settings(), confirmation_limiter(), ids=[request_id]
    )
    return report.as_dict()


@app.task(**RETRYING)
def sweep_confirmations() -> dict[str, int]:
    """Queue the requests no task holds: retries now due, lost tasks and lapsed leases."""
    with database().session() as session:
        ids = storage.due_confirmation_ids(session, storage.utcnow())
    for request_id in ids:
        send_confirmation.apply_async(args=(request_id,))
    return {"queued": len(ids)}


# Liked papers (kept apart from the planning and delivery tasks above) ------------------------


@app.task(**RETRYING)
def fetch_liked_papers() -> dict[str, int]:
    """Fetch from arXiv the liked papers the database lacks (one pass; claims keep two apart)."""
    from newsletter.likes.fetching import fetch_liked_papers as fetch

    return fetch(database(), worker_settings()).as_dict()
