"""The manage page's liked papers: which of them are still being fetched, which arXiv lacks."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from newsletter import storage, subscriptions
from newsletter.models import FETCH_MISSING, Subscriber


def liked_papers_context(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """`liked_count`, `liked_fetching` (ids being fetched) and `liked_missing` (ids arXiv
    says it has no paper for) of the subscriber's profile."""
    _keywords, likes = subscriptions.liked_papers_of(subscriber.keywords or "")
    rows = storage.paper_fetches_for(session, likes) if likes else {}
    missing = [paper for paper in likes if paper in rows and rows[paper].state == FETCH_MISSING]
    fetching = [paper for paper in likes if paper in rows and paper not in missing]
    return {
        "liked_count": len(likes),
        "liked_fetching": fetching,
        "liked_missing": missing,
        "liked_export": None,  # set by a save that uploaded an export
    }
