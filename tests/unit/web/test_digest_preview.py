"""The manage page's "today's digest" is the digest the planner would plan, with the settings."""

from __future__ import annotations

import html
import re

import pytest

from newsletter import pipeline
from newsletter.config import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        var_dir=tmp_path / "var",
        secret_key="test-secret",
        sources="hf_daily",
        min_score=25,
        popularity_weight=0.6,
    )


@pytest.mark.parametrize("keywords", ["agents, reasoning", "reasoning, -vision"])
def test_the_page_lists_what_the_planner_would_plan(w, db, settings, web_papers, keywords):
    subscriber = w.add(keywords=keywords, send_hour=0, digest_size=4)
    page = w.client.get(w.path("manage", subscriber)).text
    (row,) = pipeline.plan(db, settings, write=False).rows
    planned = row.paper_ids
    assert planned and len(planned) <= 4
    titles = re.findall(r'<h3><a href="[^"]+" rel="noopener noreferrer">([^<]+)</a></h3>', page)
    assert [html.unescape(title) for title in titles] == _paper_titles(db, planned)


def _paper_titles(db, ids: list[str]) -> list[str]:
    from newsletter import storage

    with db.session() as session:
        papers = storage.papers_by_id(session, ids)
    return [papers[i].title for i in ids]


def test_a_weekly_readers_page_lists_the_weeks_papers_as_the_planner_would(
    w, db, settings, web_papers
):
    from datetime import timedelta

    from sqlalchemy import update

    from newsletter import storage
    from newsletter.models import PaperRow

    # Half of the day's papers were collected five days ago: past a daily digest's window,
    # inside a weekly one's.
    with db.session() as session:
        ids = sorted(p.id for p in storage.recent_papers(session, days=2, now=storage.utcnow()))
        old = ids[::2]
        session.execute(
            update(PaperRow)
            .where(PaperRow.id.in_(old))
            .values(first_seen_at=storage.utcnow() - timedelta(days=5))
        )
    w.web.papers.invalidate()
    today = storage.utcnow().weekday()
    weekly = w.add(
        "weekly@example.org",
        keywords="agents, reasoning, language models",
        send_hour=0,
        digest_size=6,
        frequency="weekly",
        send_weekday=today,
    )
    daily = w.add("daily@example.org", keywords="agents, reasoning, language models", send_hour=0)
    page = w.client.get(w.path("manage", weekly)).text
    rows = {row.subscriber_id: row for row in pipeline.plan(db, settings, write=False).rows}
    planned = rows[weekly].paper_ids
    assert set(planned) & set(old), "the weekly plan ranks the week's papers"
    titles = re.findall(r'<h3><a href="[^"]+" rel="noopener noreferrer">([^<]+)</a></h3>', page)
    assert [html.unescape(title) for title in titles] == _paper_titles(db, planned)
    # A daily reader's page, like their digest, ranks only the recent days.
    daily_page = w.client.get(w.path("manage", daily)).text
    daily_titles = re.findall(
        r'<h3><a href="[^"]+" rel="noopener noreferrer">([^<]+)</a></h3>', daily_page
    )
    assert not set(map(html.unescape, daily_titles)) & set(_paper_titles(db, old))
