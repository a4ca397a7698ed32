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
