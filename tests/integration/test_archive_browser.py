"""A digest's "view in browser" page and the archive, in a real browser: the app under
uvicorn, the digest delivered over SMTP to aiosmtpd, Debian's headless Chromium."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from newsletter import pipeline, storage, subscriptions, tokens
from tests.support.web import demo_site

EMAIL = "reader@example.org"
TITLE = re.compile(r'class="card-title"[^>]*>\s*<a [^>]*>([^<]+)</a>')

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def site(tmp_path, smtp_server) -> Iterator[tuple[object, object]]:
    """The web app under uvicorn in a thread; mail goes to the test's SMTP server."""
    with demo_site(tmp_path / "var", smtp_server.url, "archive-browser-test") as site:
        yield site


def _delivered_digest(settings, db, smtp_server):
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session,
            settings,
            email=EMAIL,
            keywords="agents, reasoning, diffusion",
            now=storage.utcnow(),
            confirmed=True,
        )
        subscriber_id = subscriber.id
    assert pipeline.plan(db, settings, edition=storage.utcnow().date()).planned == 1
    assert pipeline.deliver(db, settings).sent == 1
    deadline = time.monotonic() + 20
    while not smtp_server.to(EMAIL):
        assert time.monotonic() < deadline, "no mail arrived"
        time.sleep(0.1)
    return subscriber_id, smtp_server.to(EMAIL)[0]


def _console_errors(page) -> list[str]:
    """The page's console errors, as they come (the browser's own /favicon.ico request aside)."""
    problems: list[str] = []

    def seen(message) -> None:
        if message.type == "error" and "favicon" not in (message.location or {}).get("url", ""):
            problems.append(message.text)

    page.on("console", seen)
    return problems


def _card_titles(page) -> list[str]:
    return [" ".join(t.split()) for t in page.locator(".card-title a").all_inner_texts()]


def test_view_in_browser_shows_the_mails_papers_and_the_archive_lists_it(
    site, chromium, smtp_server, tmp_path
):
    settings, db = site
    subscriber_id, mail = _delivered_digest(settings, db, smtp_server)
    html = mail.get_body(("html",)).get_content()
    mailed = [" ".join(t.split()) for t in TITLE.findall(html)]
    view_url = re.search(r'href="(http://127\.0\.0\.1:\d+/digest/[^"]+)"', html).group(1)
    assert mailed

    shots = []
    for scheme in ("light", "dark"):
        for width in (600, 375):
            context = chromium.new_context(
                viewport={"width": width, "height": 900}, color_scheme=scheme
            )
            page = context.new_page()
            problems = _console_errors(page)
            page.goto(view_url)
            assert _card_titles(page) == mailed
            assert page.get_by_role("link", name="Unsubscribe").is_visible()
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            background = page.evaluate(
                "getComputedStyle(document.querySelector('table.container')).backgroundColor"
            )
            assert (background == "rgb(17, 24, 39)") == (scheme == "dark"), background
            assert problems == []  # the page's CSP let its inline styles through
            shot = tmp_path / f"digest-{width}-{scheme}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)
            context.close()
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    assert len({shot.read_bytes() for shot in shots}) == 4

    # The manage page's archive lists the digest by its date and paper count, and opens it.
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        (row,) = storage.sent_deliveries(session, subscriber_id)
        manage = tokens.link(settings, "manage", subscriber_id, subscriber.link_key)
    context = chromium.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.goto(manage)
    day = row.edition
    entry = page.locator(".archive-list li").first
    assert f"{day:%A}, {day.day} {day:%B %Y}" in entry.inner_text()
    assert f"{len(row.items)} papers" in entry.inner_text()
    assert page.locator("input.feed-url").input_value().endswith(".atom")
    page.screenshot(path=str(tmp_path / "manage-archive.png"), full_page=True)
    entry.get_by_role("link").click()
    page.wait_for_load_state()
    assert _card_titles(page) == mailed
    context.close()
