"""Deliver: claim due digests in batches, send each over one connection, record outcomes."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from newsletter import storage
from newsletter.bounces.events import suppress
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.mail import (
    PermanentSendError,
    SendError,
    TransientSendError,
    Transport,
    WireMessage,
    open_transport,
)
from newsletter.mail.message import envelope_of
from newsletter.mail.outbox import OutboxTransport
from newsletter.mail.smtp import Envelope
from newsletter.models import HARD
from newsletter.pipeline.claims import Claim, clock_from
from newsletter.pipeline.digests import Digests, RenderError
from newsletter.pipeline.editions import EditionCache, EditionCaches, load_editions
from newsletter.pipeline.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class DeliverReport:
    """What one deliver() call did; `paths` are the .eml files written to the outbox."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    released: int = 0
    paths: list[str] = field(default_factory=list)


def _retry_delay(settings: Settings, attempts: int) -> timedelta:
    # Exponential backoff with jitter, so retries of one outage do not arrive together.
    base = settings.retry_base_seconds * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def deliver(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    ids: Sequence[int] | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    edition_caches: EditionCaches | None = None,
) -> DeliverReport:
    """Send every due digest (or just `ids`), in batches over one connection per batch.

    Each row is claimed with a lease before sending and marked the moment the server accepts
    it, so a crash resends at most the message in flight, and never a delivered one. Each
    batch's lease runs from its own claim and is renewed while it sends; a row another sender
    took over (after a stall longer than the lease) is left to it.
    On `stop`, the rest of the claimed batch goes back to the ledger untouched.
    `edition_caches` is the caller's, kept between calls; without it the renderers last one call.
    """

    clock = clock_from(now)
    now = clock()
    report = DeliverReport()
    if ids is None:
        with db.session() as session:
            ids = storage.due_delivery_ids(session, now)
    caches = edition_caches or EditionCaches()
    digests = Digests(settings, caches)
    for start in range(0, len(ids), settings.batch_size):
        if stop is not None and stop.is_set():
            break
        batch = ids[start : start + settings.batch_size]
        claim = Claim(settings, clock)
        with db.session() as session:
            rows = claim.claim(session, batch)
            editions = load_editions(session, settings, rows, now, caches)
        if rows:
            _send_batch(db, settings, digests, rows, editions, report, stop, progress, claim)
    return report


def _send_batch(
    db: Database,
    settings: Settings,
    digests: Digests,
    rows: list[storage.ClaimedDelivery],
    editions: dict[tuple[date, bool], EditionCache],
    report: DeliverReport,
    stop: threading.Event | None,
    progress: Progress | None,
    claim: Claim,
) -> None:

    pending = list(rows)
    flight: _Flight | None = None
    try:
        # Each acceptance is recorded at once by one UPDATE on a connection the batch keeps,
        # committed without waiting for the disk: only a crash of the database server in the
        # next ~0.6 s could lose the mark, and the row would then be resent with the same
        # Message-ID after its lease, as after a crash between the server's accept and the mark.
        with open_transport(settings) as transport, db.quick_commits() as ledger:
            marks = storage.SentMarks(ledger)
            while pending:
                if stop is not None and stop.is_set():
                    break
                pending = claim.keep(ledger, pending)
                if not pending:
                    break
                row = pending.pop(0)
                edition = editions[row.period]
                # Rendered while the relay takes in the message before: the two overlap.
                # Benchmark: tests/perf/bench_delivery.py, "ratio ours/raw".
                try:
                    message: WireMessage | None = digests.wire(
                        row, edition.papers, edition.trending or []
                    )
                    problem: Exception | None = None
                except Exception as exc:  # whatever went wrong, it went wrong for this row only
                    message, problem = None, exc
                if flight is not None:
                    landing, flight = flight, None
                    # The relay's replies to this row's MAIL, RCPT and DATA come while the mark
                    # of the one before is written and this one's bytes are put together.
                    following = envelope_of(message) if message is not None else None
                    held = _land(
                        db, settings, transport, ledger, marks, landing, report, claim, following
                    )
                    if progress:
                        progress(1)
                    if not held:
                        # Another sender took rows over: this one too, perhaps (see keep()).
                        kept = claim.keep(ledger, [row, *pending])
                        if not kept or kept[0] is not row:
                            pending = kept
                            continue
                        pending = kept[1:]
                    if stop is not None and stop.is_set():  # this one goes back untouched
                        pending.insert(0, row)
                        break
                if message is None:
                    assert problem is not None
                    _record_failure(db, settings, row, problem, report)
                else:
                    try:
                        transport.start(message)
                    except Exception as exc:  # this row's alone, as a failed render
                        _record_failure(db, settings, row, exc, report)
                    else:
                        flight = _Flight(row, message.message_id)
                        continue
                if progress:
                    progress(1)
            if flight is not None:
                landing, flight = flight, None
                _land(db, settings, transport, ledger, marks, landing, report, claim)
                if progress:
                    progress(1)
    except TransientSendError as exc:
        # The connection could not be (re)opened: the whole rest of the batch retries later.
        log.warning("deliver: %s; %d digests will be retried", exc, len(pending))
        for row in pending:
            _record_failure(db, settings, row, exc, report)
        pending = []
    finally:
        if flight is not None:  # its verdict was never read: it may have gone, or not
            pending.insert(0, flight.row)
        if pending:
            with db.session() as session:
                ids = [row.id for row in pending]
                report.released += storage.release_deliveries(session, ids, claim.holder)


@dataclass(frozen=True)
class _Flight:
    """A message whose data went out and whose verdict the relay has still to give."""

    row: storage.ClaimedDelivery
    message_id: str


def _land(
    db: Database,
    settings: Settings,
    transport: Transport,
    ledger: Any,
    marks: storage.SentMarks,
    flight: _Flight,
    report: DeliverReport,
    claim: Claim,
    following: Envelope | None = None,
) -> bool:
    """Read the relay's verdict on the message in flight and record it on its row.

    The sent mark is written only after the relay's 250, as with send(); a refusal or a lost
    connection is the row's failure alone. False when the row was no longer this claim's.
    `following`: the envelope of the message to start next (see Transport.finish).
    """
    row = flight.row
    try:
        result = transport.finish(following)
    except Exception as exc:
        _record_failure(db, settings, row, exc, report)
        return True
    held = marks(row.id, flight.message_id, storage.utcnow(), row.claim_token)
    if not held:
        claim.lost(row)
    # Only a subscriber with failures on record needs the reset UPDATE.
    elif row.hard_failures:
        storage.record_send_outcome(
            ledger,
            row.subscriber_id,
            hard_failure=False,
            threshold=settings.bounce_threshold,
        )
    report.sent += 1
    # The outbox answers with the file's path; a relay's "250 OK" is no path.
    if isinstance(transport, OutboxTransport) and isinstance(result, str):
        report.paths.append(result)
    return held


def _record_failure(
    db: Database,
    settings: Settings,
    row: storage.ClaimedDelivery,
    exc: Exception,
    report: DeliverReport,
) -> None:
    """A 5xx fails the delivery; anything else retries with backoff until max_attempts.

    Any exception is recorded, not only a SendError: a row that cannot be rendered, or that
    trips up the mail library, must not stop the rows after it.
    """

    error = _describe(exc)
    permanent = isinstance(exc, PermanentSendError)
    # Only a refused recipient says the address is bad; a 5xx at DATA rejects content, and an
    # address the relay cannot carry (stage "address") is the relay's limit.
    bounced = isinstance(exc, PermanentSendError) and exc.stage == "rcpt"
    with db.session() as session:
        if permanent or row.attempts >= settings.max_attempts:
            storage.mark_failed(session, row.id, error, row.claim_token)
            report.failed += 1
            outcome = "failed"
            if bounced and storage.record_send_outcome(
                session,
                row.subscriber_id,
                hard_failure=True,
                threshold=settings.bounce_threshold,
            ):
                # Refused at RCPT that many times is as sure as a hard bounce report: the
                # address goes on the suppression list too, so no import or operator
                # `subscribe` mails it again without its owner confirming.
                suppress(session, settings, row.email, HARD, error, storage.utcnow())
        else:
            retry_at = storage.utcnow() + _retry_delay(settings, row.attempts)
            storage.mark_retry(session, row.id, error, retry_at, row.claim_token)
            report.retry += 1
            outcome = "will retry"
    # One line with the row's context; a traceback only at debug level, or 100,000 rows
    # failing the same way would bury everything else in the log.
    level = logging.INFO if isinstance(exc, SendError) else logging.WARNING
    log.log(
        level,
        "deliver %d to %s (attempt %d, %s): %s",
        row.id,
        row.email,
        row.attempts,
        outcome,
        error,
    )
    log.debug("deliver %d: traceback", row.id, exc_info=exc)


MAX_ERROR_CHARS = 1000


def _describe(exc: Exception) -> str:
    """The error text kept on the row: one line, bounded, naming the exception if not ours."""
    text = str(exc) if isinstance(exc, (SendError, RenderError)) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:MAX_ERROR_CHARS]
