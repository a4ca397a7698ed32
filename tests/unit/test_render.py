"""The digest and confirmation emails: content, links, inlined CSS, personalization, caching."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from bs4 import BeautifulSoup, NavigableString

from newsletter import render
from newsletter.config import Settings
from newsletter.paper import Paper
from newsletter.render import (
    DigestItem,
    EditionRenderer,
    Email,
    compact_number,
    format_authors,
    render_confirmation,
    wrap,
)

DATA = Path(render.__file__).parent / "data" / "hf_daily_papers_2026-06-12.json"
EDITION = date(2026, 6, 12)
BASE = "https://news.example.org"
UNSUBSCRIBE = f"{BASE}/unsubscribe/TOKEN-unsub"
MANAGE = f"{BASE}/manage/TOKEN-manage"

# Properties that only a <style> block could otherwise give: if one of these is missing from
# an element's style attribute, the email depends on CSS that many clients strip.
ESSENTIAL = {
    "body": ("font-family", "background-color"),
    "table.container": ("width", "background-color"),
    "p.card-title": ("font-size", "font-weight"),
    "p.card-title a": ("color", "text-decoration"),
    "span.label": ("background-color", "border-radius"),
    "mark": ("background-color",),
    "p.snippet": ("font-size", "color"),
    "div.preheader": ("display", "max-height", "overflow"),
    "td.footer": ("font-size", "color"),
}


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    from newsletter.sources import hf_daily

    return list(hf_daily.parse(DATA.read_bytes()).papers)


@pytest.fixture
def config() -> Settings:
    return Settings(
        secret_key="test",
        base_url=BASE,
        from_address="Paper Digest <digest@news.example.org>",
        trending_size=3,
    )


def item(paper: Paper, matched: tuple[str, ...] = ("agents",)) -> DigestItem:
    snippet = f"A study of <mark>{matched[0]}</mark> &amp; friends" if matched else ""
    return DigestItem(paper, matched, snippet, f"A study of {matched[0]} & friends", 42.0)


def digest(renderer: EditionRenderer, items, trending=(), email="reader@example.net") -> Email:
    return renderer.render_digest(
        email=email,
        keywords_text='agents, "label noise"\n-medical',
        items=items,
        trending=trending,
        unsubscribe_url=UNSUBSCRIBE,
        manage_url=MANAGE,
    )


def soup(email: Email) -> BeautifulSoup:
    return BeautifulSoup(email.html, "html.parser")


def style_of(tag) -> dict[str, str]:
    declarations = (d.split(":", 1) for d in tag.get("style", "").split(";") if ":" in d)
    return {name.strip(): value.strip() for name, value in declarations}


def test_every_paper_is_shown_with_its_links_authors_and_stats(config, papers):
    chosen = papers[:10]
    email = digest(EditionRenderer(config, EDITION), [item(p) for p in chosen])
    page = soup(email)
    titles = {a.get_text(): a["href"] for a in page.select("p.card-title a")}
    assert list(titles) == [" ".join(p.title.split()) for p in chosen]
    for paper in chosen:
        assert titles[" ".join(paper.title.split())] == paper.hf_url  # a Hugging Face paper
        card = page.find("a", href=paper.hf_url).find_parent("div", class_="card")
        assert card.find("a", href=paper.pdf_url, string="PDF")
        if paper.github_repo:
            assert card.find("a", href=paper.github_repo, string="Code")
        else:
            assert not card.find("a", string="Code")
        meta = card.select_one("p.meta").get_text(" ", strip=True)
        assert (f"▲ {paper.upvotes} upvote" in meta) == (paper.upvotes > 0)
        assert ("star" in meta) == bool(paper.github_stars)
    assert "10 papers matched your keywords" in email.html
    assert "Friday, 12 June 2026" in email.html


def test_arxiv_only_papers_link_to_arxiv_and_authors_are_shortened(config):
    paper = Paper(
        id="2406.00001",
        title="Label noise, revisited",
        authors=["Ada", "Grace", "Edsger", "Barbara"],
        source="arxiv",
        abstract="We revisit label noise. " * 40,
    )
    email = digest(EditionRenderer(config, EDITION), [DigestItem(paper, ("label noise",))])
    card = soup(email).select_one("div.card")
    assert card.select_one("p.card-title a")["href"] == "https://arxiv.org/abs/2406.00001"
    assert card.select_one("p.authors").get_text() == "Ada, Grace, Edsger et al."
    # No snippet and no AI summary: a shortened abstract stands in.
    snippet = card.select_one("p.snippet").get_text()
    assert snippet.startswith("We revisit label noise.") and snippet.endswith("…")
    assert len(snippet) <= render.SUMMARY_CHARS + 1
    assert "upvote" not in card.get_text()


def test_matched_keywords_are_labels_and_the_snippet_keeps_its_highlights(config, papers):
    email = digest(EditionRenderer(config, EDITION), [item(papers[0], ("agents", "web"))])
    card = soup(email).select_one("div.card")
    assert [s.get_text() for s in card.select("span.label")] == ["agents", "web"]
    assert card.select_one("p.snippet mark").get_text() == "agents"
    assert card.select_one("p.snippet").get_text() == "A study of agents & friends"


def test_ai_summary_is_the_fallback_snippet(config, papers):
    paper = next(p for p in papers if p.ai_summary)
    email = digest(EditionRenderer(config, EDITION), [DigestItem(paper, ("x",))])
    assert soup(email).select_one("p.snippet").get_text() == render.paper_view(paper).summary
    assert paper.ai_summary and paper.ai_summary[:60] in email.text


def test_untrusted_text_is_escaped_and_only_web_links_are_kept(config):
    paper = Paper(
        id="2406.00002",
        title='<script>alert("x")</script> & "quotes"',
        authors=["<b>Mallory</b>"],
        source="hf_daily",
        github_repo="javascript:alert(1)",
        project_page="https://example.org/project",
    )
    email = digest(
        EditionRenderer(config, EDITION),
        [DigestItem(paper, ("<img src=x>",))],
        email='"><script>@example.net',
    )
    page = soup(email)
    assert page.find("script") is None and page.find("img") is None and page.find("b") is None
    assert page.select_one("p.card-title a").get_text() == paper.title
    assert "javascript:" not in email.html
    assert page.find("a", href="https://example.org/project", string="Project page")


def test_all_links_are_absolute_and_the_footer_explains_and_unsubscribes(config, papers):
    email = digest(EditionRenderer(config, EDITION), [item(p) for p in papers[:3]], papers[3:6])
    page = soup(email)
    hrefs = [a["href"] for a in page.find_all("a")]
    assert hrefs and all(re.match(r"https?://[^/]+", h) for h in hrefs), hrefs
    footer = page.select_one("td.footer")
    assert footer.find("a", href=UNSUBSCRIBE, string="Unsubscribe")
    assert footer.find("a", href=MANAGE)
    assert 'the keywords: agents, "label noise", -medical.' in footer.get_text(" ", strip=True)
    assert "reader@example.net" in footer.get_text()


def test_essential_styles_are_inline_and_only_media_queries_stay_in_style(config, papers):
    email = digest(EditionRenderer(config, EDITION), [item(p) for p in papers[:2]], papers[2:4])
    page = soup(email)
    for selector, properties in ESSENTIAL.items():
        tags = page.select(selector)
        assert tags, selector
        for tag in tags:
            assert set(properties) <= set(style_of(tag)), (selector, tag.get("style"))
    for block in page.find_all("style"):
        css = re.sub(r"/\*.*?\*/", "", block.get_text(), flags=re.S)
        # Strip every @media block: nothing may be left.
        while "@media" in css:
            start = css.index("@media")
            depth, end = 0, css.index("{", start)
            for end in range(end, len(css)):  # noqa: B020 - scanning on from the brace
                depth += {"{": 1, "}": -1}.get(css[end], 0)
                if depth == 0:
                    break
            css = css[:start] + css[end + 1 :]
        assert css.strip() == ""
    assert "prefers-color-scheme: dark" in email.html


def test_html_is_a_complete_email_safe_document(config, papers):
    email = digest(EditionRenderer(config, EDITION), [item(papers[0])])
    assert email.html.startswith("<!DOCTYPE html>")
    page = soup(email)
    assert page.find("meta", attrs={"name": "color-scheme", "content": "light dark"})
    assert page.find("meta", attrs={"name": "supported-color-schemes"})
    assert page.select_one("table.container")["width"] == "600"
    preheader = page.select_one("div.preheader")
    assert preheader.get_text().startswith("Top match: ")
    assert "display:none" in preheader["style"]
    assert "@@" not in email.html and "@@" not in email.text  # no placeholder left
    # Short lines: the HTML part can travel unencoded (7bit).
    assert max(len(line) for line in email.html.splitlines()) < 990


def test_text_part_is_a_readable_version_of_the_same_digest(config, papers):
    chosen = papers[:4]
    email = digest(EditionRenderer(config, EDITION), [item(p) for p in chosen], papers[4:6])
    text = email.text
    assert "<" not in text.replace("<mark>", "")  # no markup at all
    assert "Friday, 12 June 2026" in text and "4 papers matched your keywords" in text
    for number, paper in enumerate(chosen, 1):
        first_words = " ".join(paper.title.split()[:4])
        assert re.search(rf"^{number}\. {re.escape(first_words)}", text, re.M)
        assert f"Read: {paper.hf_url}" in text
        assert f"PDF: {paper.pdf_url}" in text
    assert "Matched: agents" in text
    assert "TRENDING TODAY" in text
    assert f"Unsubscribe: {UNSUBSCRIBE}" in text and MANAGE in text
    assert max(len(line) for line in text.splitlines() if "http" not in line) <= 76
    assert "\n\n\n" not in text


def test_subject_names_the_top_paper_and_the_count(config, papers):
    email = digest(EditionRenderer(config, EDITION), [item(p) for p in papers[:3]])
    assert email.subject.startswith("Paper Digest · Fri 12 Jun · ")
    assert " ".join(papers[0].title.split())[:30] in email.subject
    assert email.subject.endswith(" + 2 more") and len(email.subject) <= 78
    assert "\n" not in email.subject


def test_trending_lists_popular_papers_not_already_listed(config, papers):
    popular = sorted(papers, key=lambda p: -p.upvotes)
    listed = [item(popular[0])]
    email = digest(EditionRenderer(config, EDITION), listed, popular[:6])
    page = soup(email)
    trending = [a.get_text() for a in page.select("p.trending-title a")]
    assert trending == [" ".join(p.title.split()) for p in popular[1:4]]  # trending_size=3
    assert page.find(string="Trending today")
    without = digest(EditionRenderer(config, EDITION), listed, [])
    assert "Trending today" not in without.html and "TRENDING" not in without.text


def test_nothing_matched_is_a_short_note(config, papers):
    email = digest(EditionRenderer(config, EDITION), [], papers[:2])
    assert "Nothing new matched your keywords today" in email.text
    assert "Nothing new matched your keywords today" in email.html
    assert soup(email).select("div.card") == []
    assert email.subject == "Paper Digest · Fri 12 Jun · Nothing new on your keywords"
    assert soup(email).find("a", href=UNSUBSCRIBE)


def varied(papers: list[Paper], count: int) -> list[Paper]:
    """`count` papers with every kind of meta line: stats or not, code, project page, arXiv only."""
    return [
        replace(
            papers[i % len(papers)],
            id=f"2606.{10000 + i}",
            authors=[] if i % 7 == 3 else papers[i % len(papers)].authors,
            upvotes=(0, 1, 25)[i % 3],
            github_stars=(None, 1234, 0, 1)[i % 4],
            github_repo=(None, "org/repo", "https://gitlab.com/a/b")[i % 3],
            project_page=(None, f"https://example.org/{i}?a=1&b=2", "ftp://no")[i % 5 % 3],
            source=("hf_daily", "arxiv", "hf_daily+arxiv")[i % 6 % 3],
        )
        for i in range(count)
    ]


def test_cards_are_inlined_once_per_shape_and_never_leak_between_subscribers(
    config, papers, monkeypatch
):
    calls = []
    real_inline = render.inline_css
    monkeypatch.setattr(render, "inline_css", lambda html: calls.append(1) or real_inline(html))
    renderer = EditionRenderer(config, EDITION)
    chosen = varied(papers, 50)
    views = [render.paper_view(p) for p in chosen]
    shapes = {(bool(v.authors), tuple(part.url is not None for part in v.meta)) for v in views}
    # 18 different meta lines, yet only 12 shapes: links or not, with or without authors.
    assert len({tuple(part.text for part in v.meta) for v in views}) == 18
    assert len(shapes) == 12
    for n in range(10):
        email = digest(renderer, [item(p) for p in chosen[n::10]], chosen, f"{n}@example.net")
        # Papers of one shape share an inlined card, never their values.
        for card in soup(email).select("div.card, div.trending"):
            title = card.select_one("p.card-title a, p.trending-title a")
            view = next(v for v in views if v.url == title["href"])
            assert title.get_text() == view.title
            links = [(a.get_text(), a["href"]) for a in card.select("p.meta a")]
            assert links == [(part.text, part.url) for part in view.meta if part.url]
    # Once per shape of card and of trending card, plus the layouts, labels, trending section.
    assert len(calls) <= 2 * len(shapes) + 5
    inlined = len(calls)
    first = digest(
        renderer, [item(papers[0], ("alpha",)), item(papers[1], ("beta",))], email="one@example.net"
    )
    second = digest(
        renderer,
        [item(papers[1], ("gamma",)), item(papers[0], ("delta",))],
        email="two@example.net",
    )
    assert len(calls) == inlined  # no new shape: later digests reuse every inlined fragment
    labels = [s.get_text() for s in soup(second).select("span.label")]
    assert labels == ["gamma", "delta"]
    assert "alpha" not in second.html and "one@example.net" not in second.html
    assert "two@example.net" in second.html and "one@example.net" in first.html


def tree(html: str) -> list:
    """The elements (tag, attributes, children) and texts of HTML, as a parser reads them."""

    def walk(node):
        if isinstance(node, NavigableString):
            return str(node)
        return (node.name, node.attrs, [walk(child) for child in node.children])

    return [walk(node) for node in BeautifulSoup(html, "html.parser").children]


def inlined_per_paper(renderer: EditionRenderer, name: str, paper: Paper, **slots) -> str:
    """A card inlined on its own, as the renderer did before it inlined once per card shape."""
    html = renderer.env.get_template(name).render(view=render.paper_view(paper), **slots)
    styles = renderer.env.get_template("email/styles.css").render()
    page = render.inline_css(f"<html><head><style>{styles}</style></head><body>{html}</body>")
    return re.search(r"<body[^>]*>(.*)</body>", page, re.S).group(1)


def test_cards_are_the_same_as_inlining_each_paper_on_its_own(config, papers):
    tricky = [
        Paper(
            id="2406.00001",
            title="Café — ★ ▲ <b>bold</b> & \"quotes\" 'n' @@abc:title@@ @@ &amp;",
            authors=["Zoë <i>", "O'Brien & Co", "Ada\r\nLovelace\x00"],
            source="hf_daily",
            upvotes=3,
            github_repo="org/répo",  # a non-ASCII link
            github_stars=1500,
            project_page="https://example.org/é ü?q=\"x\"&r='y'<z>&amp;#frag",
        ),
        Paper(id="2406.00002", title="", source="arxiv"),
        Paper(
            id="2406.00003",
            title="@@abc:labels@@",
            authors=["@@abc:authors@@"],
            source="hf_daily+arxiv",
            github_repo="javascript:alert(1)",
            github_stars=1,
            project_page="http://x.org/{a}|^`[]%41 ",
        ),
        *varied(papers, 12),
    ]
    renderer = EditionRenderer(config, EDITION)
    for paper in tricky:
        card = renderer._card("html", paper)
        old = inlined_per_paper(renderer, "email/digest/card.html", paper, **renderer._card_slots)
        assert tree(card) == tree(old), paper
        trending = renderer._trending_card("html", paper)
        old = inlined_per_paper(renderer, "email/digest/trending_card.html", paper)
        assert tree(trending) == tree(old), paper
        assert card.isascii() and trending.isascii()
    email = digest(renderer, [item(p) for p in tricky[:3]])
    page = soup(email)
    assert [a.get_text() for a in page.select("p.card-title a")] == [p.title for p in tricky[:3]]
    assert page.select_one("p.authors").get_text() == "Zoë <i>, O'Brien & Co, Ada\nLovelace\ufffd"
    assert page.find("a", string="Code")["href"] == "https://github.com/org/r%C3%A9po"
    assert "@@abc:labels@@" in page.get_text() and page.select("span.label")


def test_confirmation_mail_links_to_the_confirm_page(config):
    url = f"{BASE}/confirm/SIGNED"
    email = render_confirmation(config, email="new@example.net", confirm_url=url)
    page = BeautifulSoup(email.html, "html.parser")
    assert page.find("a", class_="button", href=url)
    assert "48 hours" in email.text and "48 hours" in page.get_text()
    assert "wasn't you" in email.text and "wasn't you" in page.get_text()
    assert url in email.text and "new@example.net" in email.text
    assert email.subject == "Confirm your subscription to Paper Digest"
    assert all(a["href"].startswith("https://") for a in page.find_all("a"))
    assert style_of(page.find("a", class_="button")).get("background-color")


def test_helpers():
    assert format_authors(["A", "B", "C"]) == "A, B, C"
    assert format_authors(["A", "B", "C", "D"]) == "A, B, C et al."
    assert format_authors([]) == ""
    assert [compact_number(n) for n in (7, 999, 1000, 1234, 25_400)] == [
        "7",
        "999",
        "1k",
        "1.2k",
        "25k",
    ]
    assert wrap("aaa bbb ccc ddd", 7, "  ") == "aaa bbb\n  ccc ddd"
    assert wrap("short", 70, "") == "short"
    assert wrap("x" * 20 + " y", 10, "") == "x" * 20 + "\ny"  # a long word stays whole
