"""Plan: rank the recent papers for the subscribers now due and write their ledger rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.models import PLANNED, SKIPPED
from newsletter.pipeline.progress import Progress
from newsletter.planned import PlannedItem, PlannedRow
from newsletter.ranker import RankingPolicy, RecentPapers, rank_subscribers

log = logging.getLogger(__name__)


@dataclass
class PlanReport:
    """What one plan() call did; `rows` holds the rows of a dry run (write=False)."""

    due: int = 0
    planned: int = 0
    skipped: int = 0
    waiting: int = 0  # due, but no source has answered within the window yet: planned later
    papers: int = 0
    invalid_profiles: list[int] = field(default_factory=list)
    rows: list[PlannedRow] = field(default_factory=list)


# Subscribers ranked and committed together: the first chunk's digests are on their way while
# the rest is ranked, and a big day never holds every row in memory.
PLAN_CHUNK = 5000

Committed = Callable[[list[int]], None]  # called with the ids of the digests just written
Shard = tuple[int, int]  # the first and the last subscriber id of one shard of a plan


def plan_shards(
    db: Database,
    *,
    now: datetime,
    size: int,
    edition: date | None = None,
    recent: RecentPapers | None = None,
) -> list[Shard]:
    """The subscribers due at `now`, as id ranges of `size` due subscribers each.

    Cheap: it reads only the due ids. Each range is planned by plan(subscribers=...), in any
    process, in any order, as often as it is run: the (subscriber, edition) key keeps the first
    row, so shards that overlap or run twice write each digest once. With `recent`, the
    papers' index is built now, before the shards that rank with it: built once (and left in
    its shared store, if it has one) rather than by every shard.
    """
    with db.session() as session:
        ids = storage.due_subscriber_ids(session, now, edition)
    if ids and recent is not None:
        recent.exact(now)
    return [
        (ids[start], ids[min(start + size, len(ids)) - 1]) for start in range(0, len(ids), size)
    ]


def plan(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    edition: date | None = None,
    write: bool = True,
    progress: Progress | None = None,
    recent: RecentPapers | None = None,
    subscribers: Shard | None = None,
    committed: Committed | None = None,
) -> PlanReport:
    """Rank the recent papers for every subscriber whose send time has come; write the ledger.

    Identical profiles are ranked once; papers a subscriber already had are never planned again.
    Concurrent planners are safe: the (subscriber, edition) key keeps the first row.
    With `write=False` nothing is stored and the rows are returned in the report (dry run).
    `progress` is called after each committed chunk of rows, so their delivery can start, and
    `committed` with the ids of the digests to send that this call wrote (not another's).
    `recent` is the caller's index of the recent papers, reused when no paper changed since.
    `subscribers` (first id, last id) plans only the due subscribers in that range: a shard.
    """
    now = now or storage.utcnow()
    with db.session() as session:
        due = storage.due_subscribers(session, now, edition, subscribers)
    report = PlanReport(due=len(due))
    if not due:
        return report
    for ranker, group in _rankers(db, settings, now, report, recent, due):
        if not ranker.window and not _collected(db, ranker.settings, now):
            # Nothing to rank because nothing was collected yet (a fresh install, or a plan
            # that came while the first collection was still running): planning now would
            # skip these subscribers for the whole period. They stay due for the next plan.
            report.waiting += len(group)
            continue
        _plan_group(db, ranker, group, report, write, progress, committed, now)
    if report.waiting:
        log.info(
            "plan: %d due subscribers wait: no source answered in the last %g days",
            report.waiting,
            settings.paper_window_days,
        )
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
        wider = recent.widened(days) if recent is not None else RecentPapers(db, week)
        groups.append((_Ranker(db, week, now, report, wider), weekly))
    return groups


def _collected(db: Database, settings: Settings, now: datetime) -> bool:
    """Whether a source answered within the paper window: an empty window is then real."""
    with db.session() as session:
        return storage.collected_since(session, now - timedelta(days=settings.paper_window_days))


def _plan_group(
    db: Database,
    ranker: _Ranker,
    due: Sequence[storage.DueSubscriber],
    report: PlanReport,
    write: bool,
    progress: Progress | None,
    committed: Committed | None,
    now: datetime,
) -> None:
    """Rank and store one window's subscribers, chunk by chunk."""
    for start in range(0, len(due), PLAN_CHUNK):
        rows = ranker.rows(due[start : start + PLAN_CHUNK])
        planned = sum(row.state == PLANNED for row in rows)
        report.planned += planned
        report.skipped += len(rows) - planned
        if not write:
            report.rows.extend(rows)
            continue
        with db.session() as session:
            created = storage.insert_deliveries(session, rows, now)
        if committed:
            committed(sorted(id for id, state in created if state == PLANNED))
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
) -> list[PlannedRow]:
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

    def rows(self, due: Sequence[storage.DueSubscriber]) -> list[PlannedRow]:
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
            items = tuple(
                PlannedItem(
                    m.paper_id,
                    round(float(m.score), 2),
                    m.matched,
                    m.snippet_html,
                    m.where,
                    apart=m.apart,
                    liked=m.liked,
                )
                for m in one.matches
            )
            state = PLANNED if items or send_empty else SKIPPED
            rows.append(PlannedRow(one.subscriber.id, one.subscriber.edition, state, items))
        return rows
