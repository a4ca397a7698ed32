"""Fetch the liked papers not in the database from the arXiv API, in the background.

Saving a profile only queues the ids (storage.queue_paper_fetches, in the same transaction),
so a restart loses nothing and no web request waits for arXiv. Each pass claims due ids with
a lease, asks arXiv for them ID_LIST_BATCH at a time through the shared polite client, and
stores what comes back. A failure (arXiv down, slow, a malformed feed) gives the ids back
with a doubling wait; an id arXiv says it has no paper for is kept as "missing", to tell the
reader, and never asked for again. The embedded scheduler and a Celery task both run passes
(newsletter/schedule.py); two passes at once share the work out by their claims.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.sources import arxiv
from newsletter.sources.base import SourceError
from newsletter.sources.http import FetchCancelled, SourceClient

log = logging.getLogger(__name__)

# Longer than a pass can take (a few requests three seconds apart, each with retries): a
# claim outlives its fetcher only when the fetcher died, and then the next pass takes it over.
LEASE = timedelta(minutes=15)
RETRY_AT_MOST_AFTER = timedelta(hours=6)
BATCHES_PER_PASS = 4
NOT_ON_ARXIV = "arXiv has no paper with this id"


@dataclass
class FetchReport:
    """What one pass did: papers stored, ids arXiv has not, ids to try again, requests made."""

    stored: int = 0
    missing: int = 0
    retry: int = 0
    requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "stored": self.stored,
            "missing": self.missing,
            "retry": self.retry,
            "requests": self.requests,
        }


def backoff(settings: Settings, attempts: int) -> timedelta:
    """The wait after the `attempts`-th failure: doubling from retry_base_seconds, 6 h at most."""
    seconds = settings.retry_base_seconds * 2 ** max(0, attempts - 1)
    return min(timedelta(seconds=seconds), RETRY_AT_MOST_AFTER)


def fetch_liked_papers(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    client: SourceClient | None = None,
) -> FetchReport:
    """One pass: claim the due liked papers, fetch them from arXiv, store them.

    Setting `stop` cancels the request in flight at once; the ids not done go back, due now.
    """
    now = now or storage.utcnow()
    size = settings.likes_fetch_batch
    with db.session() as session:
        claim = storage.claim_paper_fetches(session, now, LEASE, size * BATCHES_PER_PASS)
    ids = sorted(claim.attempts)
    if not ids:
        return FetchReport()
    source = client or SourceClient(settings, cancel=stop)
    work = _Pass(db, settings, source, claim, now)
    try:
        for start in range(0, len(ids), size):
            try:
                work.fetch(ids[start : start + size])
            except FetchCancelled:
                log.info("liked papers: cancelled, the service is stopping")
                work.give_back(ids[start:])
                break
    finally:
        if client is None:
            source.close()
    if work.report.stored or work.report.missing or work.report.retry:
        log.info("liked papers: %s", work.report.as_dict())
    return work.report


@dataclass
class _Pass:
    """One pass's claim, client and clock, and what became of its ids."""

    db: Database
    settings: Settings
    client: SourceClient
    claim: storage.PaperFetchClaim
    now: datetime
    report: FetchReport = field(default_factory=FetchReport)

    def fetch(self, batch: Sequence[str]) -> None:
        """Fetch one batch and record what became of each of its ids."""
        self.report.requests += 1
        try:
            with self.client.budget(self.settings.source_budget):
                result = arxiv.fetch_ids(self.client, batch, self.settings)
        except FetchCancelled:
            raise
        except arxiv.IdsRefused as exc:
            self.refused(batch, exc)
            return
        except SourceError as exc:  # down, slow, malformed: all of the batch waits and retries
            log.warning("liked papers: %d ids to retry: %s", len(batch), exc.message)
            self.retry(batch, exc.message)
            return
        except Exception as exc:  # ours (a parser bug, the database): logged, retried later
            log.exception("liked papers: fetching %d ids failed", len(batch))
            self.retry(batch, f"{type(exc).__name__}: {exc}")
            return
        with self.db.session() as session:
            storage.upsert_papers(session, result.papers, self.now, archive=True)
            stored = [paper.id for paper in result.papers if paper.id in self.claim.attempts]
            storage.finish_paper_fetches(session, self.claim, stored)
            storage.mark_papers_missing(session, self.claim, result.missing, NOT_ON_ARXIV)
        self.report.stored += len(stored)
        self.report.missing += len(result.missing)
        if result.unusable:
            self.retry(result.unusable, "arXiv's entry was unreadable")

    def refused(self, batch: Sequence[str], exc: arxiv.IdsRefused) -> None:
        """arXiv refused the ids: those it names are missing; an unnamed culprit is found
        by asking for each id alone."""
        if not exc.ids and len(batch) > 1:
            for paper in batch:
                self.fetch([paper])
            return
        bad = exc.ids or list(batch)
        with self.db.session() as session:
            storage.mark_papers_missing(session, self.claim, bad, exc.message)
        self.report.missing += len(bad)
        rest = [paper for paper in batch if paper not in bad]
        if rest:  # they did nothing wrong: asked for again at the next pass
            self.give_back(rest)

    def retry(self, paper_ids: Sequence[str], error: str) -> None:
        """Give ids back to try again after a wait that doubles with each of their failures."""
        by_attempts: dict[int, list[str]] = {}
        for paper in paper_ids:
            by_attempts.setdefault(self.claim.attempts.get(paper, 0) + 1, []).append(paper)
        with self.db.session() as session:
            for attempts, papers in by_attempts.items():
                later = self.now + backoff(self.settings, attempts)
                storage.retry_paper_fetches(
                    session, self.claim, papers, error=error, next_attempt_at=later
                )
        self.report.retry += len(paper_ids)

    def give_back(self, paper_ids: Sequence[str]) -> None:
        """Hand ids back untried, due at once (a stop, or a batch refused for another id)."""
        try:
            with self.db.session() as session:
                storage.retry_paper_fetches(
                    session,
                    self.claim,
                    paper_ids,
                    error=None,
                    next_attempt_at=None,
                    count_attempt=False,
                )
        except Exception:  # their lease expires and the next pass takes them
            log.exception("liked papers: %d claims not given back", len(paper_ids))
