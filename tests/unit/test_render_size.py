"""A digest links to its web page, and stays below Gmail's clipping size."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.render import MAX_HTML_BYTES, DigestItem, EditionRenderer
from newsletter.sources import hf_daily

DATA = Path(__file__).resolve().parents[2] / "newsletter" / "data"
VIEW = "https://news.example.org/digest/abc"
TITLE = re.compile(r'class="card-title"[^>]*>\s*<a [^>]*>([^<]+)</a>')


@pytest.fixture(scope="module")
def papers():
    return list(hf_daily.parse((DATA / "hf_daily_papers_2026-06-12.json").read_bytes()).papers)


def render(papers, count: int, view_url: str | None = VIEW, **options):
    config = Settings(secret_key="t", base_url="https://news.example.org", trending_size=5)
    many = (papers * (count // len(papers) + 1))[:count]
    items = [
        DigestItem(p, ("agents", "reasoning", f"k{i}"), f"On <mark>agents</mark>: {p.abstract}")
        for i, p in enumerate(many)
    ]
    email = EditionRenderer(config, date(2026, 6, 12)).render_digest(
        email="reader@example.net",
        keywords_text="agents, reasoning",
        items=items,
        trending=papers[-5:],
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        manage_url="https://news.example.org/manage/t",
        view_url=view_url,
        **options,
    )
    return email, items


def test_a_small_digest_is_whole_and_links_to_its_page_at_the_top(papers):
    email, items = render(papers, 5)
    assert len(email.html) < MAX_HTML_BYTES
    assert email.html.index(f'href="{VIEW}"') < email.html.index('class="card-title"')
    assert ">View in browser</a>" in email.html
    assert f"View in browser: {VIEW}" in email.text.split("\n\n")[0]
    assert len(TITLE.findall(email.html)) == 5
    assert "on the web" not in email.html and "on the web" not in email.text


def test_a_large_digest_is_cut_below_the_cap_with_see_all_on_the_web(papers):
    whole, items = render(papers, 300, max_html_bytes=None)
    assert len(whole.html) > MAX_HTML_BYTES  # it would be clipped
    email, _ = render(papers, 300)
    assert len(email.html.encode()) <= MAX_HTML_BYTES
    shown = TITLE.findall(email.html)
    assert 1 <= len(shown) < 300
    # The first cards, in order, then the link to the rest; the footer (unsubscribe) stays.
    assert shown == TITLE.findall(whole.html)[: len(shown)]
    assert f'<a href="{VIEW}"' in email.html and "See all 300 on the web</a>" in email.html
    assert email.html.index("See all 300") < email.html.index(">Unsubscribe</a>")
    assert f"See all 300 on the web: {VIEW}" in email.text
    assert email.text.count("\n   Matched: ") == len(shown)
    assert "300 papers matched your keywords" in email.html


def test_without_a_web_page_nothing_is_cut(papers):
    email, _ = render(papers, 300, view_url=None)
    assert len(TITLE.findall(email.html)) == 300
    assert "View in browser" not in email.html
