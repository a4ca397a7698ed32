"""The three steps both modes run: collect() papers, plan() editions, deliver() digests."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

from newsletter import resources, storage
from newsletter.bounces import verp
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.mail import (
    PermanentSendError,
    SendError,
    TransientSendError,
    build_message,
    message_id_for,
    open_transport,
    sender_domain,
)
from newsletter.mail.outbox import OutboxTransport
from newsletter.models import PLANNED, SKIPPED
from newsletter.paper import Paper
from newsletter.ranker import RankingPolicy, RecentPapers, rank_subscribers
from newsletter.ranking import snippet_text
from newsletter.render import DigestItem, EditionRenderer
from newsletter.sources import SOURCES, SourceError, arxiv, hf_daily
from newsletter.sources.http import FetchCancelled, SourceClient
from newsletter.subscriptions import normalize_email
from newsletter.tokens import link

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with how many items were just finished

DEMO_DATA = resources.DEMO_DATA


# Collect -----------------------------------------------------------------------------------


@dataclass
class CollectReport:
    """What one source run did, as recorded in source_runs."""

    source: str
    url: str
    outcome: str  # ok, not_modified, empty, error
    new: int = 0
    updated: int = 0
    skipped: int = 0
    error: str | None = None
    seconds: float = 0.0


class _BufferedValidators:
    """ETag/Last-Modified read from the database; new ones are written with the run's papers.

    Buffering means a response whose papers were not stored never records its validators,
    so the next run fetches it again instead of getting a 304 for data we never kept.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.pending: dict[str, tuple[str | None, str | None]] = {}

    def get(self, url: str) -> tuple[str | None, str | None]:
        if url in self.pending:
            return self.pending[url]
        with self._db.session() as session:
            return storage.get_validators(session, url)

    def put(self, url: str, etag: str | None, last_modified: str | None) -> None:
        self.pending[url] = (etag, last_modified)


def collect(
    db: Database,
    settings: Settings,
    *,
    day: date | None = None,
    since: date | None = None,
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> list[CollectReport]:
    """Fetch each enabled source once and store its papers, one transaction per source run.

    A source that fails is logged in one line and recorded as an error; the others go on.
    `since` backfills arXiv from the Atom API instead of reading today's feeds.
    Setting `stop` cancels the fetch in flight at once: that source stores nothing, records
    no run, and the sources after it are not fetched.
    """

    day = day or storage.utcnow().date()
    reports = []
    validators = _BufferedValidators(db)
    with SourceClient(settings, validators=validators, cancel=stop) as client:
        for name in sources or settings.sources:
            try:
                reports.append(_collect_one(db, settings, client, validators, name, day, since))
            except FetchCancelled:
                log.info("collect %s: cancelled, the service is stopping", name)
                break
            if progress:
                progress(1)
    return reports


def _fetch(client: Any, settings: Settings, name: str, day: date, since: date | None) -> Any:

    if name == "arxiv" and since is not None:
        return arxiv.backfill(client, since, day, settings)
    return SOURCES[name].fetch(client, day, settings)


def _collect_one(
    db: Database,
    settings: Settings,
    client: Any,
    validators: _BufferedValidators,
    name: str,
    day: date,
    since: date | None,
) -> CollectReport:
    """Fetch, parse and store one source; whatever goes wrong becomes its error run."""
    started = storage.utcnow()
    clock = time.monotonic()
    validators.pending.clear()
    try:
        with client.budget(settings.source_budget):
            result = _fetch(client, settings, name, day, since)
        report = CollectReport(name, result.url, result.outcome, skipped=result.skipped)
        if result.skipped:
            log.info("collect %s: skipped %d malformed entries", name, result.skipped)
        report.seconds = time.monotonic() - clock
        with db.session() as session:
            report.new, report.updated = storage.upsert_papers(session, result.papers, started)
            for url, (etag, modified) in validators.pending.items():
                storage.put_validators(session, url, etag, modified, started)
            _record_run(session, report, day, started)
    except FetchCancelled:
        raise  # not the source's fault: nothing to record
    except SourceError as exc:
        # The source's fault (down, slow, malformed): one line, no traceback.
        log.warning("collect %s: %s", name, exc.message)
        url = getattr(exc, "url", "") or ""
        return _record_error(
            db, CollectReport(name, url, "error", error=exc.message), day, started, clock
        )
    except Exception as exc:
        # Ours or a surprise (a parser bug, the database refusing a row): the traceback is
        # logged for us, the run records one line, and the other sources still run.
        reason = _one_line(exc)
        log.exception("collect %s: %s", name, reason)
        return _record_error(
            db, CollectReport(name, "", "error", error=reason), day, started, clock
        )
    log.info("collect %s: %s, %d new, %d updated", name, report.outcome, report.new, report.updated)
    return report


def _record_run(session: Any, report: CollectReport, day: date, started: datetime) -> None:
    storage.record_source_run(
        session,
        source=report.source,
        url=report.url,
        day=day,
        started_at=started,
        finished_at=storage.utcnow(),
        outcome=report.outcome,
        papers_new=report.new,
        papers_updated=report.updated,
        skipped=report.skipped,
        error=report.error,
    )


def _record_error(
    db: Database, report: CollectReport, day: date, started: datetime, clock: float
) -> CollectReport:
    """Record a failed run in its own transaction; if even that fails, log it and go on."""
    report.seconds = time.monotonic() - clock
    try:
        with db.session() as session:
            _record_run(session, report, day, started)
    except Exception:
        log.exception("collect %s: the error run could not be recorded", report.source)
    return report


def _one_line(exc: BaseException, limit: int = 500) -> str:
    """`Type: message` on one line, short enough for a log line and the source_runs row."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_papers(db: Database, papers: Iterable[Paper], *, source: str, url: str) -> CollectReport:
    """Store papers read from a file (the demo day, a JSONL export) as one recorded run."""
    started = storage.utcnow()
    papers = list(papers)
    with db.session() as session:
        new, updated = storage.upsert_papers(session, papers, started)
        storage.record_source_run(
            session,
            source=source,
            url=url,
            day=papers[0].published if papers else None,
            started_at=started,
            finished_at=storage.utcnow(),
            outcome="ok" if papers else "empty",
            papers_new=new,
            papers_updated=updated,
        )
    return CollectReport(source, url, "ok" if papers else "empty", new, updated)


def load_demo_day(db: Database) -> CollectReport:
    """Store the bundled, recorded Hugging Face Daily Papers day (works offline)."""

    parsed = hf_daily.parse(DEMO_DATA.read_bytes())
    return load_papers(db, parsed.papers, source="hf_daily", url=f"file:{DEMO_DATA.name}")


# Plan --------------------------------------------------------------------------------------


@dataclass
class PlanReport:
    due: int = 0
    planned: int = 0
    skipped: int = 0
    papers: int = 0
    invalid_profiles: list[int] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)


# Subscribers ranked and committed together: the first chunk's digests are on their way while
# the rest is ranked, and a big day never holds every row in memory.
PLAN_CHUNK = 5000


def plan(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    edition: date | None = None,
    write: bool = True,
    progress: Progress | None = None,
    recent: RecentPapers | None = None,
) -> PlanReport:
    """Rank the recent papers for every subscriber whose send time has come; write the ledger.

    Identical profiles are ranked once; papers a subscriber already had are never planned again.
    Concurrent planners are safe: the (subscriber, edition) key keeps the first row.
    With `write=False` nothing is stored and the rows are returned in the report (dry run).
    `progress` is called after each committed chunk of rows, so their delivery can start.
    `recent` is the caller's index of the recent papers, reused when no paper changed since.
    """
    now = now or storage.utcnow()
    with db.session() as session:
        due = storage.due_subscribers(session, now, edition)
    report = PlanReport(due=len(due))
    if not due:
        return report
    for ranker, group in _rankers(db, settings, now, report, recent, due):
        _plan_group(db, ranker, group, report, write, progress, now)
    if write:
        log.info("plan: %d due, %d planned, %d skipped", report.due, report.planned, report.skipped)
    else:  # a dry run stores nothing: it must not say it planned anything
        log.info(
            "plan (dry run, nothing stored): %d due, %d would be planned, %d would be skipped",
            report.due,
            report.planned,
            report.skipped,
        )
    return report


def _rankers(
    db: Database,
    settings: Settings,
    now: datetime,
    report: PlanReport,
    recent: RecentPapers | None,
    due: Sequence[storage.DueSubscriber],
) -> list[tuple[_Ranker, list[storage.DueSubscriber]]]:
    """The due subscribers by paper window: the recent papers, or a weekly edition's week.

    A weekly window ranks the papers collected in the past seven days; its reservation read
    covers the same days, so a paper a digest of that week already held is not picked again.
    """
    daily = [one for one in due if one.window_days <= 1]
    weekly = [one for one in due if one.window_days > 1]
    groups: list[tuple[_Ranker, list[storage.DueSubscriber]]] = []
    if daily:
        groups.append((_Ranker(db, settings, now, report, recent), daily))
    if weekly:
        days = max(settings.paper_window_days, float(max(one.window_days for one in weekly)))
        week = settings.model_copy(update={"paper_window_days": days})
        groups.append((_Ranker(db, week, now, report, RecentPapers(db, week)), weekly))
    return groups


def _plan_group(
    db: Database,
    ranker: _Ranker,
    due: Sequence[storage.DueSubscriber],
    report: PlanReport,
    write: bool,
    progress: Progress | None,
    now: datetime,
) -> None:
    """Rank and store one window's subscribers, chunk by chunk."""
    for start in range(0, len(due), PLAN_CHUNK):
        rows = ranker.rows(due[start : start + PLAN_CHUNK])
        planned = sum(row["state"] == PLANNED for row in rows)
        report.planned += planned
        report.skipped += len(rows) - planned
        if not write:
            report.rows.extend(rows)
            continue
        with db.session() as session:
            storage.create_deliveries(session, rows, now)
        if progress:
            progress(len(rows))


def rank_for(
    db: Database,
    settings: Settings,
    due: Sequence[storage.DueSubscriber],
    *,
    now: datetime,
    report: PlanReport | None = None,
    recent: RecentPapers | None = None,
) -> list[dict[str, Any]]:
    """Ledger rows (subscriber_id, edition, state, items) ranking the recent papers for `due`."""
    return _Ranker(db, settings, now, report or PlanReport(), recent).rows(due)


class _Ranker:
    """One window of recent papers, ranking any number of chunks of due subscribers."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        now: datetime,
        report: PlanReport,
        recent: RecentPapers | None = None,
    ) -> None:
        self.db, self.settings, self.now, self.report = db, settings, now, report
        recent = recent or RecentPapers(db, settings)
        if recent.policy != RankingPolicy.from_settings(settings):
            raise ValueError("the recent papers were indexed with other ranking settings")
        self.window = recent.exact(now)
        report.papers = len(self.window)

    def rows(self, due: Sequence[storage.DueSubscriber]) -> list[dict[str, Any]]:
        """Ledger rows (subscriber_id, edition, state, items) for these subscribers."""
        with self.db.session() as session:
            ranked = rank_subscribers(self.window, session, due, now=self.now)
        send_empty = self.settings.send_empty_note
        rows = []
        for one in ranked:
            if one.error is not None:
                log.warning(
                    "plan: subscriber %d has an invalid profile: %s", one.subscriber.id, one.error
                )
                self.report.invalid_profiles.append(one.subscriber.id)
                continue
            items = [
                {
                    "id": m.paper_id,
                    "score": round(float(m.score), 2),
                    "matched": list(m.matched),
                    "snippet_html": m.snippet_html,
                }
                for m in one.matches
            ]
            rows.append(
                {
                    "subscriber_id": one.subscriber.id,
                    "edition": one.subscriber.edition,
                    "state": PLANNED if items or send_empty else SKIPPED,
                    "items": items,
                }
            )
        return rows


# Deliver -----------------------------------------------------------------------------------


@dataclass
class DeliverReport:
    sent: int = 0
    retry: int = 0
    failed: int = 0
    released: int = 0
    paths: list[str] = field(default_factory=list)


# A worker delivers an edition in many small batches. What they share outlives one deliver()
# call: the renderer (each paper card costs a CSS-inlining pass the first time only), the papers
# the digests show and the trending list. Kept for a few minutes, so a paper updated since shows
# its new figures.
_EDITION_SECONDS = 600.0


@dataclass
class _EditionCache:
    renderer: EditionRenderer
    made: float
    papers: dict[str, Paper] = field(default_factory=dict)
    trending: list[Paper] | None = None


class EditionCaches:
    """What the digests of an edition share across deliver() calls: renderer, papers, trending.

    Owned by whoever delivers (the embedded scheduler, a worker process, a command) and passed
    to deliver(); used by one thread at a time, as a renderer is not thread-safe. Without one,
    deliver() keeps its own for the call.
    """

    def __init__(self, seconds: float = _EDITION_SECONDS) -> None:
        self.seconds = seconds
        self._editions: dict[tuple[Settings, date], _EditionCache] = {}

    def edition(self, settings: Settings, edition: date) -> _EditionCache:
        """This edition's shared parts, made again once older than `seconds`."""
        key = (settings, edition)
        clock = time.monotonic()
        cache = self._editions.get(key)
        if cache is None or clock - cache.made > self.seconds:
            for old in [k for k, c in self._editions.items() if clock - c.made > self.seconds]:
                self._editions.pop(old, None)
            cache = self._editions[key] = _EditionCache(EditionRenderer(settings, edition), clock)
        return cache


def _load_editions(
    session: Any,
    settings: Settings,
    rows: Sequence[storage.ClaimedDelivery],
    now: datetime,
    caches: EditionCaches,
) -> dict[date, _EditionCache]:
    """The edition caches of these rows, holding every paper they show (read only if new)."""
    editions = {row.edition: caches.edition(settings, row.edition) for row in rows}
    for edition, cache in editions.items():
        wanted = {i for r in rows if r.edition == edition for i in _paper_ids(r.items)}
        missing = wanted - cache.papers.keys()
        if missing:
            cache.papers.update(storage.papers_by_id(session, missing))
        if cache.trending is None:
            cache.trending = storage.trending_papers(
                session, settings.paper_window_days, settings.trending_size + 50, now
            )
    return editions


def _paper_ids(items: Any) -> list[str]:
    # A malformed stored item is skipped here; rendering its row fails, and only that row.
    if not isinstance(items, list):
        return []
    return [i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)]


class RenderError(Exception):
    """A digest could not be rendered (e.g. its stored items are malformed)."""


class _Digests:
    """Renders the claimed deliveries of one run, one EditionRenderer per edition."""

    def __init__(self, settings: Settings, caches: EditionCaches) -> None:
        self.settings = settings
        self.caches = caches
        self.domain = sender_domain(settings.from_address)

    def renderer(self, edition: date) -> EditionRenderer:
        return self.caches.edition(self.settings, edition).renderer

    def message(
        self, row: storage.ClaimedDelivery, papers: dict[str, Paper], trending: list[Paper]
    ) -> EmailMessage:
        """The digest of one ledger row; raises RenderError whatever went wrong."""
        try:
            return self._message(row, papers, trending)
        except Exception as exc:
            raise RenderError(f"cannot render the digest: {type(exc).__name__}: {exc}") from exc

    def _message(
        self, row: storage.ClaimedDelivery, papers: dict[str, Paper], trending: list[Paper]
    ) -> EmailMessage:
        items = [
            DigestItem(
                paper=papers[item["id"]],
                matched=tuple(item.get("matched", ())),
                snippet_html=item.get("snippet_html", ""),
                # Stored digests keep only the HTML excerpt (older ones both).
                snippet_text=item.get("snippet_text") or snippet_text(item.get("snippet_html", "")),
                score=item.get("score"),
            )
            for item in row.items
            if item["id"] in papers
        ]
        listed = {item.paper.id for item in items}
        extra = [p for p in trending if p.id not in listed][: self.settings.trending_size]
        unsubscribe_url = link(self.settings, "unsubscribe", row.subscriber_id, row.link_key)
        email = self.renderer(row.edition).render_digest(
            email=row.email,
            keywords_text=row.keywords,
            items=items,
            trending=extra if row.show_trending else [],
            unsubscribe_url=unsubscribe_url,
            manage_url=link(self.settings, "manage", row.subscriber_id, row.link_key),
        )
        return build_message(
            email,
            sender=self.settings.from_address,
            recipient=row.email,
            message_id=message_id_for(row.id, row.edition, self.domain),
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=self.settings.unsubscribe_mailto,
            list_id=self.settings.list_id,
            envelope_sender=verp.return_path(self.settings, row.id),
        )


def _retry_delay(settings: Settings, attempts: int) -> timedelta:
    # Exponential backoff with jitter, so retries of one outage do not arrive together.
    base = settings.retry_base_seconds * (2 ** max(attempts - 1, 0))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class _Claim:
    """One batch's claim: its holder token, and a lease kept alive while the batch sends.

    The lease is taken from the clock at the claim and renewed whenever a third of it has
    passed, so each message starts with at least two thirds of a lease ahead of it.
    """

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.holder = storage.new_claim_token()
        self.clock = clock
        self.seconds = settings.lease_seconds
        self.renewed = time.monotonic()

    def claim(self, session: Any, ids: Sequence[int]) -> list[storage.ClaimedDelivery]:
        """Claim `ids` for this holder; returns the rows it got."""
        # Read the clocks before the UPDATE: the lease is then never later than it seems.
        self.renewed, now = time.monotonic(), self.clock()
        claimed = storage.claim_deliveries(session, ids, now, self.seconds, self.holder)
        return storage.load_claimed(session, claimed, self.holder)

    def keep(
        self, ledger: Any, pending: list[storage.ClaimedDelivery]
    ) -> list[storage.ClaimedDelivery]:
        """The rows of `pending` this claim still holds, their lease renewed when it is due."""
        if not pending or time.monotonic() - self.renewed < self.seconds / 3:
            return pending
        self.renewed, now = time.monotonic(), self.clock()
        until = now + timedelta(seconds=self.seconds)
        held = storage.renew_leases(ledger, [row.id for row in pending], self.holder, until)
        if len(held) < len(pending):
            # Only a lease that ran out (a stalled sender) lets another sender take a row.
            log.warning(
                "deliver: %d digests of this batch were taken over by another sender; "
                "leaving them to it",
                len(pending) - len(held),
            )
        return [row for row in pending if row.id in held]

    def lost(self, row: storage.ClaimedDelivery) -> None:
        """A mark found `row` held by another sender: check the rest before the next send."""
        log.warning("deliver %d to %s: no longer this sender's claim", row.id, row.email)
        self.renewed = float("-inf")


def _clock_from(start: datetime | None) -> Callable[[], datetime]:
    """The time now; for a run told it starts at `start`, `start` plus the time since then."""
    if start is None:
        return storage.utcnow
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)


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

    clock = _clock_from(now)
    now = clock()
    report = DeliverReport()
    if ids is None:
        with db.session() as session:
            ids = storage.due_delivery_ids(session, now)
    caches = edition_caches or EditionCaches()
    digests = _Digests(settings, caches)
    for start in range(0, len(ids), settings.batch_size):
        if stop is not None and stop.is_set():
            break
        batch = ids[start : start + settings.batch_size]
        claim = _Claim(settings, clock)
        with db.session() as session:
            rows = claim.claim(session, batch)
            editions = _load_editions(session, settings, rows, now, caches)
        if rows:
            _send_batch(db, settings, digests, rows, editions, report, stop, progress, claim)
    return report


def _send_batch(
    db: Database,
    settings: Settings,
    digests: _Digests,
    rows: list[storage.ClaimedDelivery],
    editions: dict[date, _EditionCache],
    report: DeliverReport,
    stop: threading.Event | None,
    progress: Progress | None,
    claim: _Claim,
) -> None:

    pending = list(rows)
    try:
        # Each acceptance is recorded at once by one UPDATE on a connection the batch keeps,
        # committed without waiting for the disk: only a crash of the database server in the
        # next ~0.6 s could lose the mark, and the row would then be resent with the same
        # Message-ID after its lease, as after a crash between the server's accept and the mark.
        with open_transport(settings) as transport, db.quick_commits() as ledger:
            while pending:
                if stop is not None and stop.is_set():
                    break
                pending = claim.keep(ledger, pending)
                if not pending:
                    break
                row = pending[0]
                edition = editions[row.edition]
                try:
                    message = digests.message(row, edition.papers, edition.trending or [])
                    result = transport.send(message)
                except Exception as exc:  # whatever went wrong, it went wrong for this row only
                    _record_failure(db, settings, row, exc, report)
                else:
                    mid, at = message["Message-ID"], storage.utcnow()
                    if not storage.mark_sent(ledger, row.id, mid, at, row.claim_token):
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
                pending.pop(0)
                if progress:
                    progress(1)
    except TransientSendError as exc:
        # The connection could not be (re)opened: the whole rest of the batch retries later.
        log.warning("deliver: %s; %d digests will be retried", exc, len(pending))
        for row in pending:
            _record_failure(db, settings, row, exc, report)
        pending = []
    finally:
        if pending:
            with db.session() as session:
                ids = [row.id for row in pending]
                report.released += storage.release_deliveries(session, ids, claim.holder)


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
            if bounced:
                storage.record_send_outcome(
                    session,
                    row.subscriber_id,
                    hard_failure=True,
                    threshold=settings.bounce_threshold,
                )
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


# Previews and dry runs ---------------------------------------------------------------------


def render_planned(
    db: Database,
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    *,
    now: datetime,
    edition_caches: EditionCaches | None = None,
) -> list[EmailMessage]:
    """Render ledger rows that were ranked but not stored (a dry run or a preview)."""
    with db.session() as session:
        subscribers = storage.subscribers_by_id(session, (r["subscriber_id"] for r in rows))
        papers = storage.papers_by_id(session, (i["id"] for r in rows for i in r["items"]))
        trending = storage.trending_papers(
            session, settings.paper_window_days, settings.trending_size + 50, now
        )
    digests = _Digests(settings, edition_caches or EditionCaches())
    messages = []
    for row in rows:
        subscriber = subscribers[row["subscriber_id"]]
        claimed = storage.ClaimedDelivery(
            id=0,
            edition=row["edition"],
            items=row["items"],
            attempts=0,
            subscriber_id=subscriber.id,
            email=subscriber.email,
            keywords=subscriber.keywords,
            show_trending=subscriber.show_trending,
            link_key=subscriber.link_key,
        )
        messages.append(digests.message(claimed, papers, trending))
    return messages


def preview(
    db: Database,
    settings: Settings,
    email: str,
    *,
    now: datetime | None = None,
    recent: RecentPapers | None = None,
) -> EmailMessage:
    """The digest `email` would get if their edition were planned now; nothing is stored."""

    now = now or storage.utcnow()
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, normalize_email(email))
        if subscriber is None:
            raise LookupError(f"no subscriber {email}")
        local = now.replace(tzinfo=UTC).astimezone(ZoneInfo(subscriber.timezone))
        due = storage.DueSubscriber(
            subscriber.id, subscriber.keywords, subscriber.digest_size, local.date()
        )
    rows = rank_for(db, settings, [due], now=now, recent=recent)
    return render_planned(db, settings, rows, now=now)[0]
