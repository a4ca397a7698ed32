"""A ledger ready to plan: the recorded demo day's papers and confirmed subscribers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def demo_day_subscribers(db: Any, settings: Any, emails: Iterable[str], keywords: str) -> None:
    """Load the recorded demo day and subscribe each address, confirmed, sent at hour 0 UTC.

    Hour 0 makes every subscriber due whenever the test runs, so a plan picks them all.
    """
    from newsletter import pipeline, storage, subscriptions

    pipeline.load_demo_day(db)
    with db.session() as session:
        for email in emails:
            subscriptions.subscribe(
                session,
                settings,
                email=email,
                keywords=keywords,
                now=storage.utcnow(),
                send_hour=0,
                confirmed=True,
            )
