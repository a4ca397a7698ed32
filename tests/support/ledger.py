"""A ledger ready to plan: the recorded demo day's papers and confirmed subscribers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def demo_day_subscribers(db: Any, settings: Any, emails: Iterable[str], keywords: str) -> None:
    """Load the recorded demo day and subscribe each address, confirmed, sent at hour 0 UTC.

    Hour 0 makes every subscriber due whenever the test runs, so a plan picks them all.
    """
    from newsletter import pipeline

    pipeline.load_demo_day(db)
    with db.session() as session:  # one transaction for them all
        for email in emails:
            _subscribe(session, settings, email, keywords, confirmed=True)


def subscribe_due(
    db: Any, settings: Any, email: str, keywords: str, *, confirmed: bool = True
) -> None:
    """Subscribe one address at hour 0 UTC (due whenever the test runs), confirmed or not."""
    with db.session() as session:
        _subscribe(session, settings, email, keywords, confirmed=confirmed)


def _subscribe(session: Any, settings: Any, email: str, keywords: str, *, confirmed: bool) -> None:
    from newsletter import storage, subscriptions

    subscriptions.subscribe(
        session,
        settings,
        email=email,
        keywords=keywords,
        now=storage.utcnow(),
        send_hour=0,
        confirmed=confirmed,
    )
