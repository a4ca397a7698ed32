"""The recently collected papers, indexed every few minutes, ranked for previews on the pages."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from markupsafe import Markup

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.paper import Paper
from newsletter.profile import Profile, ProfileError, parse_profile
from newsletter.ranking import PaperIndex
from newsletter.render import PaperView, paper_view

log = logging.getLogger(__name__)

INDEX_TTL_SECONDS = 300.0
STALE_REBUILD_NOW = 10  # TTLs: an index older than this is rebuilt before answering
MAX_KEYWORDS_CHARS = 5000


@dataclass(frozen=True)
class PreviewItem:
    """One ranked paper as a page shows it: the paper, its score and why it matched."""

    paper: PaperView
    score: float
    matched: tuple[str, ...]
    where: dict[str, tuple[str, ...]]
    snippet_html: Markup


@dataclass(frozen=True)
class Preview:
    """The result of ranking the recent papers for some keywords, or why it could not be done."""

    keywords: str
    items: Sequence[PreviewItem] = ()
    considered: int = 0  # how many papers were ranked
    error: str | None = None
    shown: bool = field(default=False)  # keywords were given: say "nothing matched" if empty


def keywords_problem(text: str) -> str | None:
    """Why `text` cannot be used as a keyword profile, or None."""
    if len(text) > MAX_KEYWORDS_CHARS:
        return f"Keep your keywords under {MAX_KEYWORDS_CHARS:,} characters."
    try:
        parse_profile(text)
    except ProfileError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _Built:
    at: float  # time.monotonic() when built
    now: datetime  # the time the papers were selected for
    index: PaperIndex
    papers: dict[str, Paper]


class PreviewIndex:
    """A PaperIndex of the papers collected within `paper_window_days`, kept a few minutes.

    Previews run on every keystroke; indexing a day of papers takes seconds, ranking one
    profile milliseconds. So the index is reused, and once stale it is rebuilt in a
    background thread while the old one keeps answering; only an index far too old (or
    none) is rebuilt while the request waits. Ranking is serialized: the index fills
    caches as it goes.
    """

    def __init__(self, db: Database, settings: Settings, ttl: float = INDEX_TTL_SECONDS) -> None:
        self.db = db
        self.settings = settings
        self.ttl = ttl
        self._ranking = threading.Lock()
        self._building = threading.Lock()
        self._built: _Built | None = None
        self.refreshing: threading.Thread | None = None

    def invalidate(self) -> None:
        """Forget the index: the next preview reads the papers again."""
        self._built = None

    def _build(self, now: datetime) -> _Built:
        with self.db.session() as session:
            recent = storage.recent_papers(session, days=self.settings.paper_window_days, now=now)
        index = PaperIndex(recent, now=now, popularity_weight=self.settings.popularity_weight)
        return _Built(time.monotonic(), now, index, {p.id: p for p in recent})

    def _staleness(self, built: _Built, now: datetime) -> float:
        """How many TTLs old the index is, by the wall clock or by the `now` asked for."""
        drift = abs((now - built.now).total_seconds())
        return max(time.monotonic() - built.at, drift) / self.ttl

    def _current(self, now: datetime) -> _Built:
        built = self._built
        if built is not None and self._staleness(built, now) < STALE_REBUILD_NOW:
            if self._staleness(built, now) >= 1:
                self._refresh_in_background(now)
            return built
        with self._building:
            built = self._built  # another request may have built it meanwhile
            if built is None or self._staleness(built, now) >= STALE_REBUILD_NOW:
                built = self._built = self._build(now)
            return built

    def _refresh_in_background(self, now: datetime) -> None:
        if not self._building.acquire(blocking=False):
            return  # a build is already running

        def refresh() -> None:
            try:
                self._built = self._build(now)
            except Exception:  # the old index keeps serving; the next request tries again
                log.exception("preview index: rebuild failed")
            finally:
                self._building.release()

        self.refreshing = threading.Thread(target=refresh, name="preview-index", daemon=True)
        self.refreshing.start()

    def paper_ids(self, now: datetime) -> list[str]:
        return list(self._current(now).papers)

    def rank(
        self,
        profile: Profile,
        *,
        now: datetime,
        top_k: int,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> tuple[list[PreviewItem], int]:
        """The best `top_k` recent papers scoring at least min_score, and how many were ranked."""
        built = self._current(now)
        index, papers = built.index, built.papers
        with self._ranking:
            matches = index.rank(
                profile, top_k=top_k, min_score=self.settings.min_score, exclude_ids=exclude_ids
            )
        items = [
            PreviewItem(
                paper=paper_view(papers[m.paper_id]),
                score=m.score,
                matched=m.matched,
                where=m.where,
                # The ranker escapes the abstract and adds only <mark> around the matches.
                snippet_html=Markup(m.snippet_html),
            )
            for m in matches
        ]
        return items, len(index)

    def preview(
        self,
        keywords: str,
        *,
        now: datetime,
        top_k: int,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> Preview:
        """Rank the recent papers for keywords as typed; a bad profile gives its error."""
        keywords = keywords.strip()
        if not keywords:
            return Preview(keywords)
        problem = keywords_problem(keywords)
        if problem:
            return Preview(keywords, error=problem, shown=True)
        items, considered = self.rank(
            parse_profile(keywords), now=now, top_k=top_k, exclude_ids=exclude_ids
        )
        return Preview(keywords, items, considered, shown=True)
