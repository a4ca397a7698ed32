"""A plan that runs before any paper was collected waits; it does not skip the day.

A scheduled plan can come before the first collection has committed (a fresh install, or a
beat whose plan fires while the collection is still running). Ranking an empty window would
mark every due subscriber "skipped" for the day, and their digest would never come.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from newsletter import pipeline, storage, subscriptions
from newsletter.models import PLANNED, SKIPPED, Delivery


def _readers(db, settings, count: int = 3) -> None:
    with db.session() as session:
        for n in range(count):
            subscriptions.subscribe(
                session,
                settings,
                email=f"reader{n}@example.org",
                keywords="language models, agents, diffusion",
                send_hour=0,
                now=storage.utcnow(),
                confirmed=True,
            )


def _states(db) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
        return {state: count for state, count in rows}


def test_a_plan_before_the_first_collection_waits_and_the_digests_come_after_it(db, settings):
    _readers(db, settings)
    report = pipeline.plan(db, settings)
    assert (report.due, report.planned, report.skipped, report.waiting) == (3, 0, 0, 3)
    assert _states(db) == {}, "nothing may be written before there is anything to rank"

    pipeline.load_demo_day(db)
    report = pipeline.plan(db, settings)
    assert (report.due, report.planned, report.waiting) == (3, 3, 0)
    assert _states(db) == {PLANNED: 3}


def _ran(db, source: str, outcome: str, now, error: str | None = None) -> None:
    """A source run that finished a minute before `now`."""
    with db.session() as session:
        storage.record_source_run(
            session,
            source=source,
            url=f"https://{source}.example/",
            day=now.date(),
            started_at=now - timedelta(minutes=2),
            finished_at=now - timedelta(minutes=1),
            outcome=outcome,
            error=error,
        )


def test_a_quiet_day_after_a_collection_is_planned_as_such(db, settings):
    """Sources that answered with nothing new are not a reason to wait: the day is skipped."""
    _readers(db, settings)
    now = storage.utcnow()
    _ran(db, "arxiv", "not_modified", now)
    report = pipeline.plan(db, settings, now=now)
    assert (report.due, report.skipped, report.waiting) == (3, 3, 0)
    assert _states(db) == {SKIPPED: 3}


def test_only_failed_collections_are_no_reason_to_skip_either(db, settings):
    _readers(db, settings)
    now = storage.utcnow()
    _ran(db, "hf_daily", "error", now, "ConnectError: connection refused")
    report = pipeline.plan(db, settings, now=now)
    assert (report.due, report.planned, report.skipped, report.waiting) == (3, 0, 0, 3)
    assert _states(db) == {}
