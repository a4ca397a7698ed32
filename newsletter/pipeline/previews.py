"""Previews and dry runs: digests ranked and rendered now, nothing stored or sent."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from newsletter import storage
from newsletter.config import Settings
from newsletter.db import Database
from newsletter.pipeline.digests import Digests
from newsletter.pipeline.editions import EditionCaches
from newsletter.pipeline.planning import rank_for
from newsletter.planned import PlannedRow
from newsletter.ranker import RecentPapers
from newsletter.subscriptions import normalize_email


def render_planned(
    db: Database,
    settings: Settings,
    rows: Sequence[PlannedRow],
    *,
    now: datetime,
    edition_caches: EditionCaches | None = None,
) -> list[EmailMessage]:
    """Render ledger rows that were ranked but not stored (a dry run or a preview)."""
    with db.session() as session:
        subscribers = storage.subscribers_by_id(session, (r.subscriber_id for r in rows))
        papers = storage.papers_by_id(session, (i.paper_id for r in rows for i in r.items))
        trending = storage.trending_papers(
            session, settings.paper_window_days, settings.trending_size + 50, now
        )
    digests = Digests(settings, edition_caches or EditionCaches())
    messages = []
    for row in rows:
        subscriber = subscribers[row.subscriber_id]
        claimed = storage.ClaimedDelivery(
            id=0,
            edition=row.edition,
            items=row.items,
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
