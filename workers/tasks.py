"""Celery tasks: thin wrappers that hand ids to the pipeline steps, never objects."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from newsletter import confirmations, pipeline, storage
from newsletter.db import Database
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
# A batch must end well before its lease does, or a sweeper could hand its rows to another
# worker while this one still sends them. The soft limit stops the batch and gives its unsent
# rows back; the hard limit kills a worker that ignored it, before the lease expires.
BATCH_SOFT_LIMIT = worker_settings().lease_seconds * 0.75
BATCH_HARD_LIMIT = worker_settings().lease_seconds * 0.9

_db: Database | None = None


def database() -> Database:
    """This process's database (engines must not cross a fork, so each process makes its own)."""
    global _db
    if _db is None or _db.settings is not worker_settings():
        if _db is not None:  # the settings were read again (tests do): drop the old engine
            _db.dispose()
        _db = Database(worker_settings())
    return _db


_limiter: tuple[Any, RateLimiter] | None = None


def confirmation_limiter() -> RateLimiter:
    """The hourly cap on confirmation mails, counted in Redis by every worker together."""
    global _limiter
    if _limiter is None or _limiter[0] is not worker_settings():
        _limiter = (worker_settings(), make_rate_limiter(worker_settings()))
    return _limiter[1]


@worker_process_init.connect
def _forget_parent_database(**_: Any) -> None:
    global _db, _limiter
    _db = None
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

    report = pipeline.plan(database(), worker_settings(), progress=fan_out)
    fan_out(everything=True)
    return {
        "due": report.due,
        "planned": report.planned,
        "queued": len(queued),
        "batches": batches[0],
    }


@app.task(
    **RETRYING,
    soft_time_limit=BATCH_SOFT_LIMIT,
    time_limit=BATCH_HARD_LIMIT,
)
def deliver_batch(delivery_ids: list[int]) -> dict[str, int]:
    """Claim and send these digests over one SMTP connection; rows already claimed are skipped."""
    try:
        report = pipeline.deliver(database(), worker_settings(), ids=delivery_ids)
    except SoftTimeLimitExceeded:
        # The pipeline has given the unsent rows back to the ledger; queue them again.
        log.warning("deliver_batch: out of time; queueing the batch again")
        deliver_batch.apply_async(args=(delivery_ids,))
        return {"sent": 0, "requeued": len(delivery_ids)}
    return {"sent": report.sent, "retry": report.retry, "failed": report.failed}


@app.task(**RETRYING)
def sweep_leases() -> dict[str, int]:
    """Queue the rows no task holds: expired leases of lost workers and retries now due."""
    with database().session() as session:
        ids = storage.stale_delivery_ids(session, storage.utcnow())
    return {"queued": len(ids), "batches": enqueue_deliveries(ids)}


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
