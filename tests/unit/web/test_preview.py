"""The live preview: the latest papers ranked for typed keywords, page and fragment."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

import pytest

from newsletter import storage
from newsletter.web.preview import PREVIEW_SIZE, PREVIEWS_PER_MINUTE
from newsletter.web.ratelimit import MemoryRateLimiter


def _titles(html: str) -> list[str]:
    return re.findall(r'rel="noopener noreferrer">([^<]+)</a></h3>', html)


def test_the_page_works_without_keywords(w, web_papers):
    page = w.client.get("/preview")
    assert page.status_code == 200
    assert '<form class="card" method="get" action="/preview" role="search">' in page.text
    assert "Type some keywords" in page.text and _titles(page.text) == []


def test_the_top_matches_are_shown_with_why_they_matched(w, web_papers):
    page = w.client.get("/preview", params={"keywords": 'diffusion, "reinforcement learning"'})
    assert page.status_code == 200
    html = page.text
    titles = _titles(html)
    assert 0 < len(titles) <= PREVIEW_SIZE
    assert re.search(r'<span class="score" title="Score out of 100">\d+</span>', html)
    assert '<span class="chip">diffusion <small>in ' in html
    assert '<span class="chip">&#34;reinforcement learning&#34; <small>in ' in html
    assert "<mark>" in html
    # The typed keywords stay in the form.
    assert ">diffusion, &#34;reinforcement learning&#34;</textarea>" in html


def test_exclusions_leave_papers_out(w, web_papers):
    both = _titles(w.client.get("/preview", params={"keywords": "diffusion"}).text)
    fewer = _titles(w.client.get("/preview", params={"keywords": "diffusion, -image"}).text)
    assert both and set(fewer) < set(both)


def test_the_fragment_has_only_the_results(w, web_papers):
    page = w.client.get("/preview/results", params={"keywords": "diffusion"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" not in page.text and "<form" not in page.text
    assert _titles(page.text) == _titles(
        w.client.get("/preview", params={"keywords": "diffusion"}).text
    )


def test_a_bad_profile_says_what_and_where(w, web_papers):
    page = w.client.get("/preview/results", params={"keywords": 'diffusion, "unclosed'})
    assert page.status_code == 422
    assert 'class="field-error" role="alert"' in page.text and "column" in page.text
    full = w.client.get("/preview", params={"keywords": "author:"})
    assert full.status_code == 200 and "column" in full.text


def test_keywords_are_escaped(w, web_papers):
    page = w.client.get("/preview", params={"keywords": "<script>alert(1)</script>"})
    assert "<script>alert(1)" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_no_papers_collected_yet(w):
    page = w.client.get("/preview/results", params={"keywords": "diffusion"})
    assert page.status_code == 200 and "No papers have been collected recently" in page.text


def test_nothing_matches(w, web_papers):
    page = w.client.get("/preview/results", params={"keywords": "zymurgy"})
    assert "None of the 30 latest papers" in page.text


def test_overlong_keywords_are_refused_politely(w, web_papers):
    page = w.client.get("/preview/results", params={"keywords": "word, " * 2000})
    assert page.status_code == 422 and "Keep your keywords under" in page.text


@pytest.mark.parametrize("path", ["/preview", "/preview/results"])
def test_previews_are_rate_limited(w, path):
    # A fixed-window limiter: a loop straddling a minute boundary would start a new window.
    w.web.limiter = MemoryRateLimiter(clock=lambda: 1_000_020.0)
    for _ in range(PREVIEWS_PER_MINUTE):
        assert w.client.get(path, params={"keywords": "x"}).status_code != 429
    refused = w.client.get(path, params={"keywords": "x"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) <= 60


def test_the_index_is_reused_then_rebuilt(web, db, web_papers):
    now = storage.utcnow()
    first = web.papers.preview("diffusion", now=now, top_k=3)
    built = web.papers._built
    web.papers.preview("agents", now=now + timedelta(seconds=10), top_k=3)
    assert web.papers._built is built  # the same index: not rebuilt per keystroke
    assert web.papers.refreshing is None
    # Days later the index is far too old to serve: it is rebuilt before answering.
    later = web.papers.preview("diffusion", now=now + timedelta(days=5), top_k=3)
    assert web.papers._built is not built
    assert first.considered == 30 and later.considered == 0  # the papers are too old by then


def test_a_stale_index_answers_while_a_new_one_is_built(web, db, web_papers):
    now = storage.utcnow()
    assert web.papers.preview("diffusion", now=now, top_k=3).considered == 30
    built = web.papers._built
    with db.session() as session:  # a collection run adds a paper
        paper = storage.recent_papers(session)[0]
        storage.upsert_papers(session, [replace(paper, id="2699.00001")], now)
    stale = now + timedelta(seconds=web.papers.ttl + 1)
    assert web.papers.preview("diffusion", now=stale, top_k=3).considered == 30  # at once
    web.papers.refreshing.join(timeout=30)
    assert web.papers._built is not built
    assert web.papers.preview("diffusion", now=stale, top_k=3).considered == 31


def test_the_page_links_to_the_sign_up_form_with_the_keywords(w, web_papers):
    page = w.client.get("/preview", params={"keywords": 'agents, "label noise"'})
    link = page.text.split("data-keywords-link", 1)[0].rsplit('<a href="', 1)[1].split('"')[0]
    assert link == "/?keywords=agents%2C+%22label+noise%22"
    form = w.client.get("/?keywords=agents%2C+%22label+noise%22")
    assert ">agents, &#34;label noise&#34;</textarea>" in form.text
