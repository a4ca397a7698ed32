"""A simulated week on a fixed clock: the real planner and deliverer, a real SMTP server.

Every hour that matters, the day's papers are stored (as collected at 05:00 UTC), then plan()
and deliver() run with `now`, and the test reads what aiosmtpd received.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from newsletter import pipeline, storage, subscriptions
from newsletter.config import load_settings
from newsletter.db import Database
from newsletter.models import Delivery
from newsletter.paper import Paper

pytestmark = pytest.mark.integration

SIGN_UP = datetime(2026, 6, 16, 9, 0)  # a Tuesday, in UTC
NEXT_MONDAY = date(2026, 6, 22)
STRONG = "Diffusion models for diffusion model sampling"
WEAK = "A survey of sampling"


def papers_of(day: date) -> list[Paper]:
    """Each day a weak match; on Tuesday, Thursday and Sunday also a strong one."""
    tag = day.strftime("%m%d")
    found = [
        Paper(
            id=f"2606.{tag}1",
            title=f"{WEAK} {tag}",
            abstract="We touch on diffusion.",
            published=day,
            source="hf_daily",
            upvotes=1,
        )
    ]
    # Also on the Monday before signing up, which is more than a week old by the digest.
    if day.weekday() in (1, 3, 6) or day == date(2026, 6, 15):
        found.append(
            Paper(
                id=f"2606.{tag}9",
                title=f"{STRONG} {tag}",
                abstract="Diffusion models, diffusion models everywhere.",
                published=day,
                source="hf_daily",
                upvotes=50,
            )
        )
    return found


@pytest.fixture
def week(tmp_path, smtp_server):
    settings = load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        smtp_url=smtp_server.url,
        send_empty_note=False,
    )
    db = Database(settings)
    db.upgrade()
    yield db, settings
    db.dispose()


def add(db, settings, email, *, frequency="daily", weekday=0, size=3, now=SIGN_UP):
    with db.session() as session:
        subscriptions.subscribe(
            session,
            settings,
            email=email,
            keywords="diffusion models",
            now=now,
            timezone="UTC",
            send_hour=7,
            digest_size=size,
            frequency=frequency,
            send_weekday=weekday,
            confirmed=True,
        )


def switch(db, email, frequency, weekday=0):
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, email)
        preferences = subscriptions.validate_preferences(
            keywords=subscriber.keywords,
            timezone=subscriber.timezone,
            send_hour=subscriber.send_hour,
            digest_size=subscriber.digest_size,
            frequency=frequency,
            send_weekday=weekday,
        )
        subscriptions.update_preferences(session, subscriber, preferences)


def tick(db, settings, now: datetime) -> None:
    """One run of the schedule at `now`: today's papers are in, plan, deliver."""
    with db.session() as session:
        storage.upsert_papers(
            session,
            papers_of(now.date()),
            datetime.combine(now.date(), datetime.min.time()) + timedelta(hours=5),
        )
    pipeline.plan(db, settings, now=now)
    pipeline.deliver(db, settings, now=now)


def hours(first: datetime, last: datetime):
    moment = first
    while moment <= last:
        for hour in (6, 7, 8, 13, 23):
            at = moment.replace(hour=hour)
            if first <= at <= last:
                yield at
        moment += timedelta(days=1)


def ledger(db, email):
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, email)
        rows = session.scalars(
            select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
        ).all()
        return [(row.edition, row.state, [i["id"] for i in row.items]) for row in rows]


def test_weekly_on_monday_mails_nothing_until_monday_then_the_weeks_best(week, smtp_server):
    db, settings = week
    # The Monday before: its papers are collected, more than a week before the digest.
    with db.session() as session:
        storage.upsert_papers(session, papers_of(date(2026, 6, 15)), datetime(2026, 6, 15, 5))
    add(db, settings, "wes@example.org", frequency="weekly", weekday=0)
    add(db, settings, "dee@example.org")  # daily, for comparison

    for now in hours(SIGN_UP, datetime(2026, 6, 21, 23, 0)):  # Tuesday to Sunday
        tick(db, settings, now)
        assert smtp_server.to("wes@example.org") == [], f"weekly mail on {now:%A %H:%M}"
    assert ledger(db, "wes@example.org") == []
    # A daily reader has an edition every day (skipped where only weak papers came), and a
    # digest on the days with a strong one: Tuesday, Thursday, Sunday.
    assert len(ledger(db, "dee@example.org")) == 6
    assert len(smtp_server.to("dee@example.org")) == 3

    for now in hours(datetime(2026, 6, 22, 6), datetime(2026, 6, 22, 23)):
        tick(db, settings, now)
    [digest] = smtp_server.to("wes@example.org")
    # The week's best three: Tuesday's, Thursday's and Sunday's strong papers (Tuesday's
    # was collected six days before), not the one from the Monday before, and no weak ones.
    best = ["2606.06169", "2606.06189", "2606.06219"]
    text = " ".join(digest.get_body(("plain",)).get_content().split())
    for tag in ("0616", "0618", "0621"):
        assert f"{STRONG} {tag}" in text
    assert f"{STRONG} 0615" not in text
    [(edition, state, items)] = ledger(db, "wes@example.org")
    assert (edition, state, sorted(items)) == (NEXT_MONDAY, "sent", best)

    # The rest of the next week: still that one digest.
    for now in hours(datetime(2026, 6, 23, 6), datetime(2026, 6, 28, 23)):
        tick(db, settings, now)
    assert len(smtp_server.to("wes@example.org")) == 1
    daily = [i for _, _, items in ledger(db, "dee@example.org") for i in items]
    assert len(daily) == len(set(daily)), "a daily reader got a paper twice"


def test_switching_frequency_mid_week_sends_no_second_digest_nor_a_paper_twice(week, smtp_server):
    db, settings = week
    monday = datetime(2026, 6, 15, 6)
    add(db, settings, "wes@example.org", frequency="weekly", weekday=0, size=5, now=monday)
    for now in hours(monday, datetime(2026, 6, 15, 23)):
        tick(db, settings, now)
    # Dee comes on Tuesday, daily: the week's Monday has no row of hers.
    add(db, settings, "dee@example.org", now=SIGN_UP)
    for now in hours(SIGN_UP, datetime(2026, 6, 17, 23)):  # Tuesday, Wednesday
        tick(db, settings, now)
    assert len(ledger(db, "dee@example.org")) == 2  # Tuesday, Wednesday (skipped)
    assert len(smtp_server.to("dee@example.org")) == 1
    assert len(smtp_server.to("wes@example.org")) == 1  # this Monday's weekly
    # Thursday: the daily reader goes weekly on Friday, the weekly one goes daily.
    switch(db, "dee@example.org", "weekly", weekday=4)
    switch(db, "wes@example.org", "daily")
    for now in hours(datetime(2026, 6, 18, 6), datetime(2026, 6, 21, 23)):  # Thursday..Sunday
        tick(db, settings, now)
    # The week already had Dee's digests: her first weekly is the next Friday's.
    assert len(ledger(db, "dee@example.org")) == 2
    # Wes now gets the days after his weekly one, never a paper his weekly digest held.
    assert len(smtp_server.to("wes@example.org")) == 1 + 2  # Thursday and Sunday matched
    for email in ("dee@example.org", "wes@example.org"):
        held = [i for _, _, items in ledger(db, email) for i in items]
        assert len(held) == len(set(held)), f"{email} got a paper twice"
    for now in hours(datetime(2026, 6, 22, 6), datetime(2026, 6, 26, 23)):
        tick(db, settings, now)
    editions = [edition for edition, _, _ in ledger(db, "dee@example.org")]
    assert editions == [date(2026, 6, 16), date(2026, 6, 17), NEXT_MONDAY]


def test_switching_to_daily_after_this_mornings_weekly_waits_for_tomorrow(week, smtp_server):
    db, settings = week
    # Weekly on Wednesday: the edition is keyed by the Monday, the day after by its own date.
    add(
        db, settings, "wes@example.org", frequency="weekly", weekday=2, now=datetime(2026, 6, 17, 6)
    )
    with db.session() as session:  # Tuesday's strong paper makes the weekly digest
        storage.upsert_papers(session, papers_of(date(2026, 6, 16)), datetime(2026, 6, 16, 5))
    tick(db, settings, datetime(2026, 6, 17, 7))
    assert len(smtp_server.to("wes@example.org")) == 1
    switch(db, "wes@example.org", "daily")
    tick(db, settings, datetime(2026, 6, 17, 8))
    tick(db, settings, datetime(2026, 6, 17, 23))
    assert len(smtp_server.to("wes@example.org")) == 1, "two digests on one day"
    tick(db, settings, datetime(2026, 6, 18, 7))
    assert len(smtp_server.to("wes@example.org")) == 2
    editions = [edition for edition, _, _ in ledger(db, "wes@example.org")]
    assert editions == [date(2026, 6, 15), date(2026, 6, 18)]


def test_a_weekly_digest_skips_the_papers_a_daily_one_sent_that_week(week, smtp_server):
    db, settings = week
    tuesday = datetime(2026, 6, 9, 7)
    add(db, settings, "dee@example.org", now=tuesday)
    tick(db, settings, tuesday)  # Tuesday's strong paper goes out in a daily digest
    [(_, state, sent)] = ledger(db, "dee@example.org")
    assert (state, sent) == ("sent", ["2606.06099"])
    switch(db, "dee@example.org", "weekly", weekday=0)
    # Six days later, Tuesday's paper is still in the weekly window: it must not come again.
    with db.session() as session:
        storage.upsert_papers(session, papers_of(date(2026, 6, 11)), datetime(2026, 6, 11, 5))
    tick(db, settings, datetime(2026, 6, 15, 7))
    [_, (edition, state, items)] = ledger(db, "dee@example.org")
    assert (edition, state) == (date(2026, 6, 15), "sent")
    assert "2606.06099" not in items and "2606.06119" in items
    assert len(smtp_server.to("dee@example.org")) == 2
