"""The digest explains each paper as the web page does: score, fields, words found apart."""

from __future__ import annotations

from datetime import date

import pytest
from bs4 import BeautifulSoup

from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.render import DigestItem, EditionRenderer, Email
from tests.support.ledger import demo_day_subscribers

EDITION = date(2026, 12, 1)  # a Tuesday
LONG_TITLE = (
    "On the Limits of Large Language Model Adaptability: Impact of Model-Internalized Priors "
    "on Annotation Tasks across Many Domains and Languages"
)


@pytest.fixture
def config() -> Settings:
    return Settings(
        secret_key="test",
        base_url="https://news.example.org",
        from_address="Paper Digest <digest@news.example.org>",
    )


def paper(pid: str, title: str, abstract: str, keywords: tuple[str, ...] = ()) -> Paper:
    return Paper(id=pid, title=title, abstract=abstract, source="arxiv", keywords=list(keywords))


def render(config: Settings, items: list[DigestItem]) -> Email:
    return EditionRenderer(config, EDITION).render_digest(
        email="reader@example.net",
        keywords_text="diffusion models, agents",
        items=items,
        trending=[],
        unsubscribe_url="https://news.example.org/unsubscribe/T",
        manage_url="https://news.example.org/manage/T",
    )


def test_subject_puts_brand_and_date_first_and_fits_78_characters(config):
    items = [DigestItem(paper(f"2612.0000{i}", LONG_TITLE, "x")) for i in range(8)]
    subject = render(config, items).subject
    assert subject.startswith("Paper Digest · Tue 1 Dec · On the Limits of Large Language")
    assert subject.endswith("… + 7 more")
    assert len(subject) <= 78


def test_subject_of_one_short_title_is_whole(config):
    subject = render(
        config, [DigestItem(paper("2612.00001", "Label noise, revisited", "x"))]
    ).subject
    assert subject == "Paper Digest · Tue 1 Dec · Label noise, revisited"


def test_card_shows_score_and_where_each_entry_matched(config):
    one = paper("2612.00001", "Agents that plan", "Diffusion models for agents.")
    item = DigestItem(
        one,
        ("diffusion models", "agents"),
        score=87.4,
        where={"diffusion models": ("abstract",), "agents": ("title", "abstract")},
    )
    email = render(config, [item])
    card = BeautifulSoup(email.html, "html.parser").select_one("div.card")
    assert card.select_one("span.score").get_text() == "87/100"
    labels = [s.get_text() for s in card.select("span.label")]
    assert labels == ["diffusion models in abstract", "agents in title, abstract"]
    assert card.select_one("span.where").get("style")  # inlined like the rest
    assert (
        "87/100 · Matched: diffusion models (in abstract), agents (in title, abstract)"
        in " ".join(email.text.split())
    )


def test_words_found_apart_are_shown_as_words_not_as_the_phrase(config):
    apart = paper(
        "2612.00002",
        "Score-based diffusion",
        "We study diffusion on graphs. Separately, several models of mixing are compared.",
    )
    together = paper("2612.00003", "Fast samplers", "Latent diffusion models are fast.")
    where = {"diffusion models": ("title", "abstract")}
    items = [
        DigestItem(apart, ("diffusion models",), score=31.0, where=where),
        DigestItem(together, ("diffusion models",), score=64.0, where=where),
    ]
    email = render(config, items)
    cards = BeautifulSoup(email.html, "html.parser").select("div.card")
    assert cards[0].select_one("span.label").get_text() == "diffusion + models in title, abstract"
    assert cards[1].select_one("span.label").get_text() == "diffusion models in title, abstract"
    text = " ".join(email.text.split())
    assert "Matched: diffusion + models (in title, abstract)" in text
    assert "Matched: diffusion models (in title, abstract)" in text


def test_plural_and_hyphen_forms_count_as_the_phrase(config):
    one = paper("2612.00004", "Semi-supervised learning", "A semi supervised learner.")
    item = DigestItem(one, ("semi-supervised learning",), score=50.0, where={})
    card = BeautifulSoup(render(config, [item]).html, "html.parser").select_one("div.card")
    assert card.select_one("span.label").get_text() == "semi-supervised learning"


def test_old_rows_without_score_or_fields_still_render(config):
    one = paper("2612.00005", "Agents", "Agents.")
    email = render(config, [DigestItem(one, ("agents",))])
    card = BeautifulSoup(email.html, "html.parser").select_one("div.card")
    assert card.select_one("span.score") is None
    assert card.select_one("span.label").get_text() == "agents"


def test_titles_and_summaries_of_stored_papers_are_cleaned_for_display(config):
    one = paper("2612.00006", "Up to 6$\\times$ faster", "Costs drop by 95\\% in $O(n^2)$ time.")
    email = render(config, [DigestItem(one, ())])
    assert "Up to 6× faster" in email.subject
    page = BeautifulSoup(email.html, "html.parser")
    assert page.select_one("p.card-title a").get_text() == "Up to 6× faster"
    assert "Costs drop by 95% in O(n²) time." in page.select_one("p.snippet").get_text()
    assert "Costs drop by 95% in O(n²) time." in email.text


def _empty(config: Settings, day: date) -> Email:
    return EditionRenderer(config, day).render_digest(
        email="reader@example.net",
        keywords_text="agents",
        items=[],
        trending=[],
        unsubscribe_url="https://news.example.org/unsubscribe/T",
        manage_url="https://news.example.org/manage/T",
    )


def test_an_empty_weekend_note_says_why_and_when_the_next_comes(config):
    email = _empty(config, date(2026, 12, 5))  # a Saturday
    assert email.subject == "Paper Digest · Sat 5 Dec · No new arXiv papers on weekends"
    text = " ".join(email.text.split())
    assert "arXiv announces no new papers on weekends" in text
    assert "for your digest on Monday 7 December." in text
    assert "We will look again tomorrow" not in text
    assert "arXiv announces no new papers on weekends" in email.html
    assert max(len(line) for line in email.text.splitlines() if "http" not in line) <= 76


def test_an_empty_weekday_note_names_holidays_and_the_next_day(config):
    friday = " ".join(_empty(config, date(2026, 12, 4)).text.split())
    assert "on an arXiv holiday no new papers come at all" in friday
    assert "Your next digest comes on Monday 7 December" in friday
    tuesday = _empty(config, date(2026, 12, 1))
    assert "Your next digest comes tomorrow" in " ".join(tuesday.text.split())
    assert tuesday.subject == "Paper Digest · Tue 1 Dec · Nothing new on your keywords"


def test_a_planned_and_delivered_digest_explains_score_and_fields(db, settings, outbox):
    """Through the ledger: the planner stores where each entry matched, the digest shows it."""
    from newsletter import pipeline

    demo_day_subscribers(db, settings, ["ada@example.org"], "agents, reasoning")
    (row,) = pipeline.plan(db, settings, write=False).rows
    assert all(item.where for item in row.items)
    assert pipeline.plan(db, settings).planned == 1
    assert pipeline.deliver(db, settings).sent == 1
    [message] = outbox()
    text = " ".join(message.get_body(("plain",)).get_content().split())
    html = message.get_body(("html",)).get_content()
    first = row.items[0]
    label = first.matched[0]
    fields = ", ".join(first.where[label])
    assert f"{first.score:.0f}/100 · Matched: " in text
    assert f"{label} (in {fields})" in text
    assert f"{first.score:.0f}/100</span>" in html and f" in {fields}</span>" in html
