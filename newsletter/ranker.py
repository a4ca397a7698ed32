"""How this service ranks: its policy, the recent papers' index, one subscriber or many.

newsletter.ranking scores papers for profiles and knows nothing of the service. This module decides
what the service ranks with: which papers (those collected within the window), the minimum
score, the weight of popularity, the digest size, and the papers a subscriber already had.
The planner, `newsletter preview`, `newsletter rank`, the preview page and the manage page
all rank through it, so none of them can list a paper a digest would not hold.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import pickle
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from sqlalchemy.orm import Session

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.paper import Paper
from newsletter.profile import Profile, ProfileError, parse_profile
from newsletter.ranking import Match, PaperIndex
from newsletter.ranking.feedback import Feedback, Learned, TextSpace, feedback_of
from newsletter.ranking.index import _paused_gc as paused_gc

log = logging.getLogger(__name__)

INDEX_TTL_SECONDS = 300.0
RATED_PAPERS_KEPT = 200_000  # texts of rated papers a window keeps before reading afresh
STALE_REBUILD_NOW = 10  # TTLs: an index older than this is rebuilt before a page is answered


@dataclass(frozen=True)
class RankingPolicy:
    """What the settings say about ranking, the same wherever the service ranks."""

    min_score: float
    popularity_weight: float
    digest_size: int  # papers to list when nobody said how many
    window_days: float  # how recently a paper must have been collected

    @classmethod
    def from_settings(cls, settings: Settings) -> RankingPolicy:
        """The policy of this deployment (NEWSLETTER_MIN_SCORE, _POPULARITY_WEIGHT, ...)."""
        return cls(
            min_score=settings.min_score,
            popularity_weight=settings.popularity_weight,
            digest_size=settings.digest_size,
            window_days=settings.paper_window_days,
        )

    def since(self, now: datetime) -> datetime:
        """The earliest a paper can have been collected to be ranked at `now`."""
        return now - timedelta(days=self.window_days)


@dataclass(frozen=True, eq=False)
class PaperWindow:
    """The papers that can be ranked at one time, indexed once; ranked by one caller at a time."""

    policy: RankingPolicy
    now: datetime  # the time the papers were selected for
    index: PaperIndex
    papers: dict[str, Paper]
    # (id, updated_at) of the stored papers it holds; None when they came from elsewhere.
    versions: tuple[tuple[str, datetime], ...] | None = None
    built_at: float = field(default_factory=time.monotonic)
    # The index fills caches as it ranks: one caller at a time.
    _ranking: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Built on the first ranking with ratings: the papers' text vectors (ranking.feedback).
    _space: list[TextSpace] = field(default_factory=list, repr=False)
    # Rated papers read from storage for this window (liked papers of older editions).
    rated: dict[str, Paper] = field(default_factory=dict, repr=False)

    @classmethod
    def of(
        cls,
        policy: RankingPolicy,
        papers: Sequence[Paper],
        now: datetime,
        versions: tuple[tuple[str, datetime], ...] | None = None,
    ) -> PaperWindow:
        """Index `papers` as the policy says (popularity weight; freshness as of `now`)."""
        index = PaperIndex(papers, now=now, popularity_weight=policy.popularity_weight)
        return cls.around(policy, now, index, versions)

    @classmethod
    def around(
        cls,
        policy: RankingPolicy,
        now: datetime,
        index: PaperIndex,
        versions: tuple[tuple[str, datetime], ...] | None,
    ) -> PaperWindow:
        """A window over an index already built (here, or by another process)."""
        # The index's papers: of duplicate ids, the one it ranks.
        return cls(policy, now, index, {p.id: p for p in index.papers}, versions)

    def __len__(self) -> int:
        return len(self.index)

    def rank(
        self,
        profiles: Sequence[Profile],
        *,
        top_k: Sequence[int],
        exclude_ids: Sequence[frozenset[str]],
        feedback: Sequence[Feedback | None] | None = None,
    ) -> list[list[Match]]:
        """Each profile's best papers scoring at least the policy's minimum, best first.

        With `feedback` (one per profile, None for none), keyword scores are fused with what
        the reader's rated papers teach, and a paper chosen by it says which liked paper it
        is like (`Match.liked`)."""
        # Many small objects, none cyclic: no collector passes over the whole heap meanwhile.
        with self._ranking, paused_gc():
            learned = None
            if feedback is not None and any(feedback):
                if not self._space:
                    self._space.append(TextSpace(self.index.papers))
                keywords = [bool(p.positives) for p in profiles]
                # Only a profile with ratings reads its words as a bag of words.
                words = [p.words if f else "" for p, f in zip(profiles, feedback, strict=True)]
                learned = Learned(self._space[0], self.index.prior, feedback, keywords, words)
            results = self.index.rank_many(
                profiles,
                top_k=top_k,
                min_score=self.policy.min_score,
                exclude_ids=exclude_ids,
                learned=learned,
            )
            if learned is not None:
                _say_why(learned, results)
            return results

    def known(self, ids: Iterable[str]) -> dict[str, Paper]:
        """Of these paper ids, those whose text this window has (its papers, rated ones)."""
        return {i: p for i in ids if (p := self.papers.get(i) or self.rated.get(i)) is not None}

    def holds(self, versions: tuple[tuple[str, datetime], ...], now: datetime) -> bool:
        """Would an index of these stored papers, built at `now`, rank exactly as this one?"""
        # PaperIndex counts freshness in whole days from now.date(): within one day, the same
        # papers in the same versions rank the same (tests/unit/test_ranker.py checks it).
        return self.versions == versions and self.now.date() == now.date()


class IndexStore(Protocol):
    """Somewhere processes leave built indexes for each other (Redis, in distributed mode)."""

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None."""

    def put(self, key: str, value: bytes) -> None:
        """Store `value` under `key` for a while (an edition's plan, at least)."""


try:
    _CODE = version("paper-newsletter")
except PackageNotFoundError:  # running from a source tree that was never installed
    _CODE = "source"


class SharedIndexes:
    """Built indexes exchanged through an IndexStore: pickled, compressed and signed.

    Building the index of a day's papers takes seconds; loading one takes a tenth of that.
    Every process that plans a shard of an edition would build the same index, so the first
    to build one leaves it in the store and the others load it. The bytes are signed with
    the deployment's secret key (HMAC-SHA256): a pickle runs code when it is loaded, and only
    this deployment's processes may have written it.
    """

    def __init__(self, store: IndexStore, secret: str) -> None:
        self.store = store
        self._key = hmac.new(secret.encode(), b"paper-index", hashlib.sha256).digest()

    @staticmethod
    def key(
        policy: RankingPolicy, versions: tuple[tuple[str, datetime], ...], now: datetime
    ) -> str:
        """The name of the index of these stored papers, ranked with `policy` on `now`'s day."""
        described = repr((_CODE, policy, now.date(), versions)).encode()
        return "newsletter:index:" + hashlib.sha256(described).hexdigest()

    def load(self, key: str) -> PaperIndex | None:
        """The index stored under `key`, if one is and its signature holds."""
        blob = self.store.get(key)
        if blob is None or len(blob) < 32:
            return None
        signature, body = blob[:32], blob[32:]
        if not hmac.compare_digest(signature, hmac.new(self._key, body, "sha256").digest()):
            log.warning("recent papers: the stored index %s is not signed by this deployment", key)
            return None
        try:
            with _paused_gc():
                index = pickle.loads(zlib.decompress(body))  # noqa: S301 - signed by us, above
        except Exception:  # another version's classes: build it again
            log.warning("recent papers: the stored index %s cannot be read", key, exc_info=True)
            return None
        return index if isinstance(index, PaperIndex) else None

    def save(self, key: str, index: PaperIndex) -> None:
        """Leave `index` (fresh: nothing ranked with it yet) under `key` for the others."""
        with _paused_gc():
            body = zlib.compress(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL), 1)
        self.store.put(key, hmac.new(self._key, body, "sha256").digest() + body)


@contextmanager
def _paused_gc() -> Iterator[None]:
    """No cyclic GC while an index's million small objects are made: it would scan them all,
    again and again (ten times the time of the load itself)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class RecentPapers:
    """The index of the recently collected papers, built once and shared by whoever ranks.

    One per process, made by its owner (the embedded service, a worker process, the web app,
    a command) and handed to the planner and the pages. The planner asks for `exact()`: the
    papers as stored right now, reusing the index when none changed. Pages, ranking on every
    keystroke, ask for `current()`: an index at most a TTL old, rebuilt in a background thread
    once stale while the old one keeps answering; only one far too old (or none) is rebuilt
    while the request waits.

    With `shared` (the workers' store), `exact()` loads an index another process built for
    the same papers instead of building it, and leaves the ones it builds there; such an
    owner plans in shards, so it also keeps the wider windows it is asked for (widened()).
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        ttl: float = INDEX_TTL_SECONDS,
        shared: SharedIndexes | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = RankingPolicy.from_settings(settings)
        self.ttl = ttl
        self.shared = shared
        self._building = threading.Lock()
        self._built: PaperWindow | None = None
        self._wider: dict[float, RecentPapers] = {}
        self.refreshing: threading.Thread | None = None

    def widened(self, days: float) -> RecentPapers:
        """The papers of a longer window (a weekly edition's), otherwise ranked the same.

        An owner with a shared store keeps it (every shard of a weekly edition asks for it);
        one without makes a new one each time, let go after its plan.
        """
        found = self._wider.get(days)
        if found is None:
            wider = self.settings.model_copy(update={"paper_window_days": days})
            found = RecentPapers(self.db, wider, ttl=self.ttl, shared=self.shared)
            if self.shared is not None:
                self._wider[days] = found
        return found

    @property
    def built(self) -> PaperWindow | None:
        """The window last built, if any."""
        return self._built

    def invalidate(self) -> None:
        """Forget the index: the next ranking reads the papers again."""
        self._built = None

    def exact(self, now: datetime) -> PaperWindow:
        """The papers collected within the window at `now`, exactly as stored at this moment."""
        with self._building:
            with self.db.session() as session:
                versions = self._versions(session, now)
            built = self._built
            if built is None or not built.holds(versions, now):
                built = self._built = self._exact(versions, now)
            return built

    def _exact(self, versions: tuple[tuple[str, datetime], ...], now: datetime) -> PaperWindow:
        """The window of these papers: from the shared store if another process built it."""
        if self.shared is None:
            return self._build(now)
        key = self.shared.key(self.policy, versions, now)
        index = self.shared.load(key)
        if index is not None:
            return PaperWindow.around(self.policy, now, index, versions)
        built = self._build(now)
        if built.versions == versions:  # what the key says: no paper changed between the reads
            self.shared.save(key, built.index)
        return built

    def current(self, now: datetime) -> PaperWindow:
        """A window for `now` at most a TTL old, or a little older while a new one is built."""
        built = self._built
        if built is not None and self._staleness(built, now) < STALE_REBUILD_NOW:
            if self._staleness(built, now) >= 1:
                self._refresh_in_background(now)
            return built
        with self._building:
            built = self._built  # another caller may have built it meanwhile
            if built is None or self._staleness(built, now) >= STALE_REBUILD_NOW:
                built = self._built = self._build(now)
            return built

    def _versions(self, session: Session, now: datetime) -> tuple[tuple[str, datetime], ...]:
        days = self.policy.window_days
        return storage.recent_paper_versions(session, days=days, now=now)

    def _build(self, now: datetime) -> PaperWindow:
        with self.db.session() as session:
            # Versions first: a paper stored between the two reads makes the next exact() build
            # again, instead of reusing an index that lacks it.
            versions = self._versions(session, now)
            papers = storage.recent_papers(session, days=self.policy.window_days, now=now)
        return PaperWindow.of(self.policy, papers, now, versions)

    def _staleness(self, built: PaperWindow, now: datetime) -> float:
        """How many TTLs old the index is, by the wall clock or by the `now` asked for."""
        drift = abs((now - built.now).total_seconds())
        return max(time.monotonic() - built.built_at, drift) / self.ttl

    def _refresh_in_background(self, now: datetime) -> None:
        if not self._building.acquire(blocking=False):
            return  # a build is already running

        def refresh() -> None:
            try:
                self._built = self._build(now)
            except Exception:  # the old index keeps serving; the next request tries again
                log.exception("recent papers: rebuilding the index failed")
            finally:
                self._building.release()

        self.refreshing = threading.Thread(target=refresh, name="recent-papers", daemon=True)
        self.refreshing.start()


# Ranking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    """One subscriber's papers for now, best first, or why their profile cannot be ranked."""

    subscriber: storage.DueSubscriber
    matches: list[Match]
    error: str | None = None


def rank_subscribers(
    window: PaperWindow,
    session: Session,
    due: Sequence[storage.DueSubscriber],
    *,
    now: datetime,
) -> list[Ranked]:
    """Rank the window for each subscriber: their profile, their ratings, their digest size,
    and never a paper one of their digests already holds nor one they rated. Equal profiles
    with equal ratings are ranked once."""
    ranked: list[Ranked | None] = [None] * len(due)
    ready: list[int] = []
    profiles: list[Profile] = []
    for position, subscriber in enumerate(due):
        try:
            profiles.append(parse_profile(subscriber.keywords))
        except ProfileError as exc:
            ranked[position] = Ranked(subscriber, [], str(exc))
            continue
        ready.append(position)
    # A paper collected since `since` can only be in a digest planned since then.
    since = window.policy.since(now)
    ids = [due[p].id for p in ready]
    sent = storage.reserved_paper_ids(session, ids, since)
    ratings = storage.ratings_by_subscriber(session, ids)
    feedback = _feedback(window, session, profiles, [ratings.get(i, {}) for i in ids])
    results = window.rank(
        profiles,
        top_k=[due[p].digest_size for p in ready],
        exclude_ids=[
            _never_again(sent.get(i, ()), profile, ratings.get(i, {}))
            for i, profile in zip(ids, profiles, strict=True)
        ],
        feedback=feedback,
    )
    for position, matches in zip(ready, results, strict=True):
        ranked[position] = Ranked(due[position], matches)
    return [r for r in ranked if r is not None]


def _never_again(
    sent: Iterable[str], profile: Profile, ratings: Mapping[str, int]
) -> frozenset[str]:
    """Papers a subscriber must not be given: those sent, liked or rated."""
    if not profile.likes and not ratings:
        return frozenset(sent)
    return frozenset(sent).union(profile.likes, ratings)


def _feedback(
    window: PaperWindow,
    session: Session,
    profiles: Sequence[Profile],
    ratings: Sequence[Mapping[str, int]],
) -> list[Feedback | None] | None:
    """Each profile's Feedback; liked papers outside the window are read from storage (once a
    window: they are kept on it)."""
    wanted = {i for p, r in zip(profiles, ratings, strict=True) for i in (*p.likes, *r)}
    if not wanted:
        return None
    missing = [i for i in wanted if i not in window.papers and i not in window.rated]
    if missing:
        if len(window.rated) > RATED_PAPERS_KEPT:
            window.rated.clear()
        window.rated.update(storage.papers_by_id(session, missing))
    return feedbacks_of(profiles, ratings, window.known(wanted))


def feedbacks_of(
    profiles: Sequence[Profile], ratings: Sequence[Mapping[str, int]], texts: Mapping[str, Paper]
) -> list[Feedback | None]:
    """Each profile's Feedback from its likes and ratings (None for neither), texts given."""
    with paused_gc():
        return [
            feedback_of(p.likes, r, texts) if p.likes or r else None
            for p, r in zip(profiles, ratings, strict=True)
        ]


def rank_subscriber(
    window: PaperWindow, session: Session, subscriber: storage.DueSubscriber, *, now: datetime
) -> Ranked:
    """One subscriber's papers, exactly as the planner would choose them at `now`."""
    return rank_subscribers(window, session, [subscriber], now=now)[0]


def _say_why(learned: Learned, results: list[list[Match]]) -> None:
    """Every paper the learned part chose says why: one no entry matched whole and no liked
    paper explains is labelled with the profile's words it has ("metric + learning"); one with
    neither reason is not given."""
    for position in learned.profiles():
        matches = results[position]
        if all(m.matched or m.liked for m in matches):
            continue
        kept = []
        for m in matches:
            if not (m.matched or m.liked):
                words = learned.words_found(position, m.paper_id)
                if not words:
                    continue
                m = m._replace(matched=(" + ".join(words),))
            kept.append(m)
        results[position] = kept


def rank_profile(
    window: PaperWindow,
    profile: Profile,
    *,
    top_k: int | None = None,
    exclude_ids: frozenset[str] = frozenset(),
    ratings: Mapping[str, int] | None = None,
    papers: Mapping[str, Paper] | None = None,
) -> list[Match]:
    """The window ranked for a profile that is no subscriber's (typed on a page, given to the
    CLI); `top_k` defaults to the digest size. `ratings` ({paper id: 1 or -1}) and the
    profile's likes are learned from as the planner does, with their texts from the window,
    the papers read for it, or `papers`; rated and liked papers are never returned."""
    k = window.policy.digest_size if top_k is None else top_k
    rated = dict(ratings or {})
    feedback = None
    if profile.likes or rated:
        wanted = [*profile.likes, *rated]
        texts = window.known(wanted)
        texts.update({i: papers[i] for i in wanted if papers and i in papers and i not in texts})
        feedback = [feedback_of(profile.likes, rated, texts)]
    excluded = exclude_ids | _never_again((), profile, rated)
    return window.rank([profile], top_k=[k], exclude_ids=[excluded], feedback=feedback)[0]
