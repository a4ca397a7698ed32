"""Celery tasks: thin wrappers that hand ids to the pipeline steps, never objects."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from newsletter import confirmations, pipeline, storage
from newsletter.db import Database
from newsletter.ranker import RecentPapers, SharedIndexes
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

# How long a built index stays in Redis for the other processes: the plan of an edition, shards
# redelivered late included. A new collection makes a new key, so nothing stale is ever read.
INDEX_STORE_SECONDS = 3 * 3600


class RedisIndexes:
    """The workers' store of built indexes, in Redis; when Redis fails, each builds its own."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)

    def get(self, key: str) -> bytes | None:
        """The stored bytes, or None (also when Redis does not answer)."""
        try:
            value = self.client.get(key)
        except redis.exceptions.RedisError as exc:
            log.warning("index store: %s", exc)
            return None
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes) -> None:
        """Store the bytes for INDEX_STORE_SECONDS; a failure only costs the others a build."""
        try:
            self.client.set(key, value, ex=INDEX_STORE_SECONDS)
        except redis.exceptions.RedisError as exc:
            log.warning("index store: %s", exc)


def shared() -> _Shared:
    """What this process's tasks share: the recent papers' index and the edition renderers.

    The index comes from Redis when another process built it for the same papers.
    """
    global _shared
    db = database()
    if _shared is None or _shared.db is not db:
        settings = db.settings
        store = None
        if settings.redis_url and settings.secret_key:
            store = SharedIndexes(RedisIndexes(settings.redis_url), settings.secret_key)
        recent = RecentPapers(db, settings, shared=store)
        _shared = _Shared(db, recent, pipeline.EditionCaches())
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
    """Split the editions now due into shards that any worker plans, from the `plan` queue.

    Lists only the due subscribers' ids and builds the papers' index once (left in Redis for
    the shards). First it queues again every digest that is due and that no task may hold: rows
    whose tasks were lost (a broker restarted without its data, a shard killed between its
    commit and its fan-out); a duplicate task sends nothing. A shard still queued or running
    when the next plan comes is planned again by it, and finds its subscribers planned.
    """
    now = storage.utcnow()
    with database().session() as session:
        due = storage.due_delivery_ids(session, now)
    batches = enqueue_deliveries(due)
    shards = pipeline.plan_shards(
        database(), now=now, size=worker_settings().plan_shard_size, recent=shared().recent
    )
    for first, last in shards:
        plan_shard.apply_async(args=(first, last, now.isoformat()))
    return {"shards": len(shards), "queued": len(due), "batches": batches}


@app.task(**RETRYING)
def plan_shard(first: int, last: int, planned_at: str) -> dict[str, int]:
    """Plan the subscribers with ids first..last due at `planned_at`; queue what it wrote.

    Each chunk's digests are queued as soon as it is committed. Run twice, overlapping another
    shard, or redelivered after its worker died, it writes each digest once: the (subscriber,
    edition) key keeps the first row, and only the rows this run created are queued by it.
    """
    now = datetime.fromisoformat(planned_at)
    queued = [0, 0]  # digests, batches

    def fan_out(ids: list[int]) -> None:
        queued[1] += enqueue_deliveries(ids)
        queued[0] += len(ids)

    report = pipeline.plan(
        database(),
        worker_settings(),
        now=now,
        recent=shared().recent,
        subscribers=(first, last),
        committed=fan_out,
    )
    return {
        "due": report.due,
        "planned": report.planned,
        "waiting": report.waiting,
        "queued": queued[0],
        "batches": queued[1],
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
