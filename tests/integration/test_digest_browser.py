"""The digest as a real browser draws it (Debian's headless Chromium, driven by Playwright)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.render import DigestItem, EditionRenderer

DATA = Path(__file__).resolve().parents[2] / "newsletter" / "data"

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def digest():
    from newsletter.sources import hf_daily

    papers = list(hf_daily.parse((DATA / "hf_daily_papers_2026-06-12.json").read_bytes()).papers)
    config = Settings(secret_key="t", base_url="https://news.example.org", trending_size=5)
    items = [
        DigestItem(p, ("agents", "reasoning"), f"On <mark>agents</mark>: {p.title[:60]}")
        for p in papers[:10]
    ]
    popular = sorted(papers[10:], key=lambda p: -p.upvotes)
    email = EditionRenderer(config, date(2026, 6, 12)).render_digest(
        email="reader@example.net",
        keywords_text="agents, reasoning",
        items=items,
        trending=popular,
        unsubscribe_url="https://news.example.org/unsubscribe/t",
        manage_url="https://news.example.org/manage/t",
    )
    return email, items, popular[:5]


def open_page(chromium, html: str, **options):
    page = chromium.new_page(viewport={"width": 800, "height": 900}, **options)
    # Offline: every request but the document itself is refused.
    page.route(re.compile(r"^https?://"), lambda route: route.abort())
    page.set_content(html)
    return page


def test_every_title_is_visible_and_a_screenshot_is_taken(chromium, digest, tmp_path):
    email, items, trending = digest
    page = open_page(chromium, email.html)
    shown = page.inner_text("body")
    for paper in [item.paper for item in items] + trending:
        title = " ".join(paper.title.split())
        assert page.get_by_text(title, exact=True).first.is_visible(), title
        assert title in shown
    assert "10 papers matched your keywords" in shown
    assert page.get_by_role("link", name="Unsubscribe").is_visible()
    # The preheader is for inbox previews only.
    assert not page.locator("div.preheader").is_visible()
    width = page.evaluate("document.querySelector('table.container').getBoundingClientRect().width")
    assert width <= 602
    shot = tmp_path / "digest.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()


def test_the_look_does_not_depend_on_the_style_block(chromium, digest, tmp_path):
    """Gmail and others drop <style>: with it removed, the light-mode page is pixel-identical."""
    email, _, _ = digest
    stripped = re.sub(r"<style>.*?</style>", "", email.html, flags=re.S)
    assert "<style" not in stripped
    shots = []
    for name, html in (("with-style", email.html), ("without-style", stripped)):
        page = open_page(chromium, html, color_scheme="light")
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path.read_bytes())
        page.close()
    assert shots[0] == shots[1]


def test_dark_mode_and_narrow_screens_are_honoured(chromium, digest, tmp_path):
    email, _, _ = digest
    dark = open_page(chromium, email.html, color_scheme="dark")
    light = open_page(chromium, email.html, color_scheme="light")
    script = "getComputedStyle(document.querySelector('table.container')).backgroundColor"
    assert light.evaluate(script) == "rgb(255, 255, 255)"
    assert dark.evaluate(script) == "rgb(17, 24, 39)"
    dark.screenshot(path=str(tmp_path / "digest-dark.png"))
    narrow = chromium.new_page(viewport={"width": 375, "height": 800})
    narrow.set_content(email.html)
    width = narrow.evaluate(
        "document.querySelector('table.container').getBoundingClientRect().width"
    )
    assert width <= 375
    overflow = narrow.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375
    narrow.screenshot(path=str(tmp_path / "digest-narrow.png"))
    for page in (dark, light, narrow):
        page.close()
