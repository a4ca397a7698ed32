"""The recently collected papers, indexed once a minute, ranked for previews on the pages."""

from __future__ import annotations

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

INDEX_TTL_SECONDS = 60.0
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


class PreviewIndex:
    """A PaperIndex of the papers collected within `paper_window_days`, rebuilt once a minute.

    Previews run on every keystroke; indexing the papers each time would cost far more than
    ranking. Ranking is serialized because the index fills caches as it goes.
    """

    def __init__(self, db: Database, settings: Settings, ttl: float = INDEX_TTL_SECONDS) -> None:
        self.db = db
        self.settings = settings
        self.ttl = ttl
        self._lock = threading.Lock()
        self._built: tuple[float, datetime, PaperIndex, dict[str, Paper]] | None = None

    def invalidate(self) -> None:
        """Forget the index: the next preview reads the papers again."""
        with self._lock:
            self._built = None

    def _index(self, now: datetime) -> tuple[PaperIndex, dict[str, Paper]]:
        if self._built is not None:
            built_at, built_for, index, papers = self._built
            fresh = time.monotonic() - built_at < self.ttl
            if fresh and abs((now - built_for).total_seconds()) < self.ttl:
                return index, papers
        with self.db.session() as session:
            recent = storage.recent_papers(session, days=self.settings.paper_window_days, now=now)
        index = PaperIndex(recent, now=now, popularity_weight=self.settings.popularity_weight)
        papers = {p.id: p for p in recent}
        self._built = (time.monotonic(), now, index, papers)
        return index, papers

    def paper_ids(self, now: datetime) -> list[str]:
        with self._lock:
            return list(self._index(now)[1])

    def rank(
        self,
        profile: Profile,
        *,
        now: datetime,
        top_k: int,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> tuple[list[PreviewItem], int]:
        """The best `top_k` recent papers scoring at least min_score, and how many were ranked."""
        with self._lock:
            index, papers = self._index(now)
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
