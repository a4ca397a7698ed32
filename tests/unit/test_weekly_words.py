"""A weekly digest names its week, not the Monday its ledger row is keyed by."""

from __future__ import annotations

import email
from datetime import timedelta
from email.policy import default

from newsletter import pipeline, storage, subscriptions
from newsletter.pipeline.editions import EditionCaches


def _subscribe(db, settings, address: str, frequency: str) -> None:
    today = storage.utcnow()
    with db.session() as session:
        subscriptions.subscribe(
            session,
            settings,
            email=address,
            keywords="language models, agents, diffusion",
            timezone="UTC",
            send_hour=0,
            frequency=frequency,
            send_weekday=today.weekday(),
            now=today,
            confirmed=True,
        )


def _mails(settings) -> dict[str, email.message.EmailMessage]:
    found = {}
    for path in sorted(settings.outbox_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=default)
        found[str(message["To"])] = message
    return found


def test_a_weekly_digest_says_its_week_and_a_daily_one_its_day(db, settings):
    pipeline.load_demo_day(db)
    _subscribe(db, settings, "weekly@example.org", "weekly")
    _subscribe(db, settings, "daily@example.org", "daily")
    assert pipeline.plan(db, settings).planned == 2
    pipeline.deliver(db, settings)
    mails = _mails(settings)
    weekly, daily = mails["weekly@example.org"], mails["daily@example.org"]
    today = storage.utcnow().date()
    monday = today - timedelta(days=today.weekday())
    assert f" · week of {monday.day} {monday:%b} · " in str(weekly["Subject"])
    assert f" · {today:%a} {today.day} {today:%b} · " in str(daily["Subject"])
    weekly_text = weekly.get_body(("plain",)).get_content()
    assert f"Week of {monday.day} {monday:%B %Y}" in weekly_text
    assert f"{monday:%A}, {monday.day} {monday:%B}" not in weekly_text


def test_a_daily_and_a_weekly_edition_of_the_same_date_do_not_share_words(settings):
    caches = EditionCaches()
    monday = storage.utcnow().date()
    monday -= timedelta(days=monday.weekday())
    daily = caches.edition(settings, monday).renderer
    weekly = caches.edition(settings, monday, weekly=True).renderer
    assert daily is not weekly and weekly.weekly and not daily.weekly
