"""Collect: fetch each source once, store its papers, record the run; the demo day and files."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from newsletter import resources, storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.paper import Paper
from newsletter.pipeline.progress import Progress
from newsletter.sources import SOURCES, SourceError, arxiv, hf_daily
from newsletter.sources.http import FetchCancelled, SourceClient
from newsletter.text import tex_to_text

log = logging.getLogger(__name__)


DEMO_DATA = resources.DEMO_DATA


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
    """Store papers read from a file (the demo day, a JSONL export) as one recorded run.

    Their text is stored clean, as the sources store theirs: TeX rendered as Unicode.
    """
    started = storage.utcnow()
    papers = [_clean(paper) for paper in papers]
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


def _clean(paper: Paper) -> Paper:
    """The paper with its title, abstract and AI summary as readable text (no TeX)."""
    return dataclasses.replace(
        paper,
        title=tex_to_text(paper.title),
        abstract=tex_to_text(paper.abstract),
        ai_summary=tex_to_text(paper.ai_summary) or None if paper.ai_summary else paper.ai_summary,
    )
