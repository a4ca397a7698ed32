"""The previews on the pages: the recent papers ranked for typed keywords or a subscriber."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo

from markupsafe import Markup
from sqlalchemy.orm import Session

from newsletter import editions, storage
from newsletter.analysis import Analyzer, split_words
from newsletter.models import Subscriber
from newsletter.paper import Paper
from newsletter.planned import PlannedItem
from newsletter.profile import Profile, parse_profile
from newsletter.ranker import PaperWindow, RecentPapers, rank_profile, rank_subscriber
from newsletter.ranking import Match
from newsletter.render import PaperView, paper_view, words_apart
from newsletter.storage import DueSubscriber
from newsletter.subscriptions import SubscriptionError, validate_keywords
from newsletter.text import tex_to_text


@dataclass(frozen=True)
class PreviewItem:
    """One ranked paper as a page shows it: the paper, its score and why it matched."""

    paper: PaperView
    score: float
    matched: tuple[str, ...]
    where: Mapping[str, tuple[str, ...]]
    snippet_html: Markup
    # entry -> how the page labels it: its words ("diffusion + models") if found only apart.
    shown: dict[str, str] = field(default_factory=dict)
    liked: tuple[str, str] | None = None  # (id, title) of the liked paper it is like


@dataclass(frozen=True)
class Preview:
    """The result of ranking the recent papers for some keywords, or why it could not be done."""

    keywords: str
    items: Sequence[PreviewItem] = ()
    considered: int = 0  # how many papers were ranked
    error: str | None = None
    shown: bool = field(default=False)  # keywords were given: say "nothing matched" if empty
    # A subscriber's matches among the recent papers that an earlier digest already holds:
    # left out of `items` (a paper is never sent twice), shown apart so none vanish silently.
    sent: Sequence[PreviewItem] = ()


def keywords_problem(text: str) -> str | None:
    """Why `text` cannot be used as a keyword profile, or None (the sign-up's rules)."""
    try:
        validate_keywords(text)
    except SubscriptionError as exc:
        return exc.message
    return None


class PreviewIndex:
    """The pages' view of the shared recent papers: previews ranked as the digests are.

    Previews run on every keystroke; indexing the papers takes seconds, ranking one profile
    milliseconds. So the pages rank the index the process shares (RecentPapers), which is at
    most a TTL old and rebuilt in the background once stale.
    """

    def __init__(self, recent: RecentPapers) -> None:
        self.recent = recent
        self._week: RecentPapers | None = None  # a weekly digest's window, made when first asked

    def _weekly(self) -> RecentPapers:
        """The index a weekly reader's digest ranks: the papers of the past seven days."""
        if self._week is None:
            policy = self.recent.policy
            days = max(policy.window_days, editions.WEEK_DAYS)
            settings = self.recent.settings.model_copy(update={"paper_window_days": days})
            self._week = RecentPapers(self.recent.db, settings, ttl=self.recent.ttl)
        return self._week

    @property
    def ttl(self) -> float:
        return self.recent.ttl

    @property
    def refreshing(self) -> threading.Thread | None:
        """The background rebuild last started, if any."""
        return self.recent.refreshing

    @property
    def _built(self) -> PaperWindow | None:
        return self.recent.built

    def invalidate(self) -> None:
        """Forget the index: the next preview reads the papers again."""
        self.recent.invalidate()

    def paper_ids(self, now: datetime) -> list[str]:
        return list(self.recent.current(now).papers)

    def rank(
        self,
        profile: Profile,
        *,
        now: datetime,
        top_k: int,
        exclude_ids: frozenset[str] = frozenset(),
    ) -> tuple[list[PreviewItem], int]:
        """The best `top_k` recent papers scoring at least min_score, and how many were ranked."""
        window = self.recent.current(now)
        matches = rank_profile(window, profile, top_k=top_k, exclude_ids=exclude_ids)
        return _items(window, matches), len(window)

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

    def digest(self, session: Session, subscriber: Subscriber, *, now: datetime) -> Preview:
        """What the subscriber's digest would hold if it were planned now (nothing is stored)."""
        local = now.replace(tzinfo=UTC).astimezone(ZoneInfo(subscriber.timezone))
        size = subscriber.digest_size
        weekly = subscriber.frequency == editions.WEEKLY
        recent = self._weekly() if weekly else self.recent
        days = editions.WEEK_DAYS if weekly else 1
        due = DueSubscriber(subscriber.id, subscriber.keywords, size, local.date(), days)
        window = recent.current(now)
        ranked = rank_subscriber(window, session, due, now=now)
        if ranked.error is not None:
            return Preview(subscriber.keywords, error=ranked.error, shown=True)
        items = _items(window, ranked.matches)
        sent = self._already_sent(window, session, subscriber, now=now)
        return Preview(subscriber.keywords, items, len(window), shown=True, sent=sent)

    def _already_sent(
        self, window: PaperWindow, session: Session, subscriber: Subscriber, *, now: datetime
    ) -> list[PreviewItem]:
        """The recent papers the subscriber's digests already hold, as those digests gave them:
        the score, reasons and excerpt they were planned with (keywords and ratings may have
        changed since), newest digest first."""
        held = storage.held_items(session, subscriber.id, window.policy.since(now))
        first: dict[str, PlannedItem] = {}  # a paper in two digests: as the newest gave it
        for item in held:
            if item.paper_id in window.papers:
                first.setdefault(item.paper_id, item)
        return _items(window, list(first.values()))


@cache
def _analyzer() -> Analyzer:
    return Analyzer()  # corpus-free, as the digests label their entries


def _shown(paper: Paper, matched: Sequence[str]) -> dict[str, str]:
    """The label of each matched entry, as the digest shows it (words found apart as words)."""
    analyzer = _analyzer()
    texts = (paper.title, paper.abstract, " ; ".join(paper.keywords))
    fields = [analyzer.postings(split_words(tex_to_text(text))) for text in texts]
    shown = {}
    for label in matched:
        words = words_apart(label, fields, analyzer)
        shown[label] = " + ".join(words) if words else label
    return shown


def _items(window: PaperWindow, matches: Sequence[Match | PlannedItem]) -> list[PreviewItem]:
    """Ranked matches, or a digest's stored items, as the pages show them."""
    return [
        PreviewItem(
            paper=paper_view(window.papers[m.paper_id]),
            score=m.score,
            matched=m.matched,
            where=m.where,
            # The ranker escapes the abstract and adds only <mark> around the matches.
            snippet_html=Markup(m.snippet_html),
            shown=_shown(window.papers[m.paper_id], m.matched),
            liked=m.liked,
        )
        for m in matches
    ]
