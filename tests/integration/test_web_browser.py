"""The whole subscriber journey in a real browser: sign up, confirm, manage, get a digest,
unsubscribe from it. Debian's headless Chromium (Playwright), uvicorn on a free port, and a
real SMTP server (aiosmtpd) that receives the mail the test then reads."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from newsletter import pipeline, storage
from newsletter.models import ACTIVE, PENDING, UNSUBSCRIBED
from tests.support.web import demo_site, watched_page

EMAIL = "grace@example.org"
KEYWORDS = 'diffusion, "reinforcement learning", -medical'

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def site(tmp_path, smtp_server) -> Iterator[tuple[str, object, object]]:
    """The web app under uvicorn in a thread; mail goes to the test's SMTP server."""
    with demo_site(tmp_path / "var", smtp_server.url, "browser-test") as (settings, db):
        yield settings.base_url, settings, db


@pytest.fixture
def page(tmp_path, chromium):
    # A reader in Tokyo: the sign-up form should pick up the browser's time zone.
    with watched_page(chromium, timezone_id="Asia/Tokyo", locale="en-GB") as page:
        yield page


def _subscriber(db):
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, EMAIL)
        assert subscriber is not None
        return subscriber


def _wait_for_mail(smtp_server, count: int, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while len(smtp_server.to(EMAIL)) < count:
        assert time.monotonic() < deadline, "no mail arrived"
        time.sleep(0.1)
    return smtp_server.to(EMAIL)[count - 1]


def test_sign_up_confirm_manage_and_unsubscribe(site, page, smtp_server, tmp_path):
    from playwright.sync_api import expect

    base_url, settings, db = site

    # Sign up. The script filled in the browser's time zone; typing keywords shows a preview.
    page.goto(f"{base_url}/")
    expect(page.locator("#timezone")).to_have_value("Asia/Tokyo")
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Keywords").press_sequentially(KEYWORDS, delay=5)
    expect(page.locator("#preview-results .paper").first).to_be_visible(timeout=10_000)
    expect(page.locator("#preview-results mark").first).to_be_visible()
    page.get_by_label("Send at").select_option("8")
    page.get_by_label("Papers per email").fill("5")
    page.screenshot(path=str(tmp_path / "signup.png"), full_page=True)
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    # The background sender writes the pending row and mails the link.
    confirmation = _wait_for_mail(smtp_server, 1)
    subscriber = _subscriber(db)
    assert subscriber.state == PENDING
    assert (subscriber.timezone, subscriber.send_hour, subscriber.digest_size) == (
        "Asia/Tokyo",
        8,
        5,
    )
    assert subscriber.keywords == KEYWORDS

    # The confirmation mail's link opens a page; only its button confirms.
    text = confirmation.get_body(("plain",)).get_content()
    link = re.search(r"http://\S+/confirm/\S+", text).group(0)
    page.goto(link)
    expect(page.get_by_role("button", name="Confirm")).to_be_visible()
    assert _subscriber(db).state == PENDING
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
    assert _subscriber(db).state == ACTIVE

    # The settings page: what the digest would hold today; a change is saved.
    page.get_by_role("link", name="Change your settings").click()
    expect(page.get_by_role("heading", name="Your digest settings")).to_be_visible()
    expect(page.locator("#preview-results .paper").first).to_be_visible()
    page.get_by_label("Papers per email").fill("4")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    assert _subscriber(db).digest_size == 4

    # A digest is planned and delivered over SMTP, like every morning.
    planned = pipeline.plan(db, settings, edition=storage.utcnow().date())
    assert planned.planned == 1
    delivered = pipeline.deliver(db, settings)
    assert delivered.sent == 1
    digest = _wait_for_mail(smtp_server, 2)
    header = digest["List-Unsubscribe"]
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.search(r"<(http[^>]+/unsubscribe/[^>]+)>", header).group(1)
    html = digest.get_body(("html",)).get_content()
    assert urlsplit(unsubscribe_url).path in html  # the visible link is the same one

    # The digest's unsubscribe link: a page with a button, then unsubscribed at once.
    page.goto(unsubscribe_url)
    assert _subscriber(db).state == ACTIVE
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert _subscriber(db).state == UNSUBSCRIBED
    expect(page.get_by_role("button", name="Subscribe again")).to_be_visible()

    # The preview page on its own, updated as the keywords are typed.
    page.goto(f"{base_url}/preview")
    page.get_by_label("Keywords").press_sequentially("agents, -vision", delay=5)
    expect(page.locator("#preview-results .paper").first).to_be_visible(timeout=10_000)
    page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
    page.get_by_role("link", name="Sign up with these keywords").click()
    expect(page.get_by_label("Keywords")).to_have_value("agents, -vision")

    assert (tmp_path / "signup.png").stat().st_size > 10_000
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    assert page.problems == []  # no script error, nothing blocked by the CSP
