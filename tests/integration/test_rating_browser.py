"""Rating from the email, in a real browser: a digest delivered over SMTP to aiosmtpd, its
"Less like this" clicked in Debian's headless Chromium, the page's one button pressed, the
ratings read back from the database, and the next edition planned with them."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from newsletter import pipeline, storage, subscriptions, tokens
from newsletter.paper import Paper
from newsletter.planned import PlannedRow
from tests.support.web import demo_site, watched_page

EMAIL = "reader@example.org"
KEYWORDS = "agents, reasoning, diffusion"

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def site(tmp_path, smtp_server) -> Iterator[tuple[object, object]]:
    """The web app under uvicorn in a thread; mail goes to the test's SMTP server."""
    with demo_site(tmp_path / "var", smtp_server.url, "rating-browser-test") as site:
        yield site


@dataclass
class Rated:
    """What the flow did: who rated, the disliked paper, another liked, its near-duplicate."""

    subscriber_id: int
    disliked: Paper
    liked: Paper
    twin: Paper
    before: PlannedRow  # the next edition, planned (and not stored) before the rating


def _near_duplicate(paper: Paper) -> Paper:
    """Another paper saying nearly the same: a new id, its title and abstract barely changed."""
    return dataclasses.replace(
        paper,
        id="2612.99901",
        title=f"{paper.title} (extended version)",
        abstract=f"{paper.abstract} This version adds an appendix with more experiments.",
        upvotes=0,
    )


def _mail(smtp_server):
    deadline = time.monotonic() + 20
    while not smtp_server.to(EMAIL):
        assert time.monotonic() < deadline, "no mail arrived"
        time.sleep(0.1)
    (mail,) = smtp_server.to(EMAIL)
    return mail


def _next_edition(db, settings, subscriber_id, *, write: bool) -> PlannedRow:
    tomorrow = storage.utcnow().date() + timedelta(days=1)
    report = pipeline.plan(db, settings, edition=tomorrow, write=write)
    if not write:
        (row,) = [row for row in report.rows if row.subscriber_id == subscriber_id]
        return row
    with db.session() as session:
        (stored,) = [
            row
            for row in storage.subscriber_deliveries(session, subscriber_id)
            if row.edition == tomorrow
        ]
        items = storage.planned_items(stored.items)
    return PlannedRow(subscriber_id, tomorrow, stored.state, items)


def _ratings(db, subscriber_id) -> dict[str, tuple[int, str, object]]:
    with db.session() as session:
        return {
            r.paper_id: (r.value, r.origin, r.edition)
            for r in storage.subscriber_ratings(session, subscriber_id)
        }


def rate_from_the_email(site, chromium, smtp_server, tmp_path) -> Rated:
    """Deliver a digest, click "Less like this" under its first paper in the mail, mark the
    second "More like this" on the page that opens, and press its button."""
    settings, db = site
    with db.session() as session:
        subscriber_id = subscriptions.subscribe(
            session, settings, email=EMAIL, keywords=KEYWORDS, now=storage.utcnow(), confirmed=True
        ).id
    assert pipeline.plan(db, settings, edition=storage.utcnow().date()).planned == 1
    assert pipeline.deliver(db, settings).sent == 1
    html = _mail(smtp_server).get_body(("html",)).get_content()
    with db.session() as session:
        (row,) = storage.sent_deliveries(session, subscriber_id)
        first, second = (item.paper_id for item in storage.planned_items(row.items)[:2])
        papers = storage.papers_by_id(session, [first, second])
    # Its near-duplicate arrives after the digest; the next edition, as planned before rating.
    twin = _near_duplicate(papers[first])
    pipeline.load_papers(db, [twin], source="hf_daily", url="file:near-duplicate")
    before = _next_edition(db, settings, subscriber_id, write=False)

    with watched_page(chromium, viewport={"width": 800, "height": 900}) as page:
        page.set_content(html)  # the mail as a mail client shows it
        page.locator(".card").first.get_by_role("link", name="Less like this").click()
        page.wait_for_load_state()
        assert page.url.startswith(f"{settings.base_url}/rate/")
        disliked = page.locator(f'input[name="rating:{first}"][value="less"]')
        assert disliked.is_checked()
        assert _ratings(db, subscriber_id) == {}  # opening the link saved nothing
        page.screenshot(path=str(tmp_path / "rate-page.png"), full_page=True)
        # The rest of the digest is on the same page, rated in the same go.
        page.locator(f'input[name="rating:{second}"][value="more"]').check()
        page.get_by_role("button", name="Save ratings").click()
        page.get_by_text("Your ratings are saved.").wait_for()
        assert disliked.is_checked()
        assert page.locator(f'input[name="rating:{second}"][value="more"]').is_checked()
        assert page.problems == []  # the site's CSP let its stylesheet and script through
    return Rated(subscriber_id, papers[first], papers[second], twin, before)


def test_less_like_this_from_the_email_saves_the_ratings(site, chromium, smtp_server, tmp_path):
    settings, db = site
    rated = rate_from_the_email(site, chromium, smtp_server, tmp_path)
    today = storage.utcnow().date()
    assert _ratings(db, rated.subscriber_id) == {
        rated.disliked.id: (-1, "email", today),
        rated.liked.id: (1, "email", today),
    }
    # The near-duplicate was one of the next edition's papers before the rating.
    assert rated.twin.id in before_ids(rated)

    # The manage page lists both, downloads them with the rest of the reader's data, clears one.
    with db.session() as session:
        subscriber = storage.subscriber_by_id(session, rated.subscriber_id)
        manage = tokens.link(settings, "manage", subscriber.id, subscriber.link_key)
    with watched_page(chromium, viewport={"width": 800, "height": 900}) as page:
        page.goto(manage)
        rows = page.locator(".rated-list tbody tr")
        assert rows.count() == 2
        listed = " ".join(rows.all_inner_texts())
        assert "▲ More like this" in listed and "▼ Less like this" in listed
        assert f"from your digest of {today.day} {today:%B %Y}" in listed
        page.locator(".ratings").screenshot(path=str(tmp_path / "manage-ratings.png"))
        with page.expect_download() as download:
            page.get_by_role("button", name="Download my data").click()
        data = json.loads(Path(download.value.path()).read_text())
        assert {r["paper_id"]: r["rating"] for r in data["ratings"]} == {
            rated.disliked.id: "less",
            rated.liked.id: "more",
        }
        assert data["profile"]["keywords"] == KEYWORDS and len(data["deliveries"]) == 1
        row = rows.filter(has_text="Less like this")
        row.get_by_role("button", name="Clear").click()
        page.get_by_text("That rating is cleared.").wait_for()
        assert page.locator(".rated-list tbody tr").count() == 1
        assert page.problems == []
    assert set(_ratings(db, rated.subscriber_id)) == {rated.liked.id}


def before_ids(rated: Rated) -> list[str]:
    return [item.paper_id for item in rated.before.items]


def _place(row: PlannedRow, paper_id: str) -> tuple[int, float]:
    """(position, score) of a paper in a planned row; (beyond the last, no score) if absent."""
    for position, item in enumerate(row.items):
        if item.paper_id == paper_id:
            return position, item.score
    return len(row.items), float("-inf")


def test_the_next_edition_ranks_the_disliked_papers_near_duplicate_lower(
    site, chromium, smtp_server, tmp_path
):
    settings, db = site
    rated = rate_from_the_email(site, chromium, smtp_server, tmp_path)
    before_position, before_score = _place(rated.before, rated.twin.id)
    assert before_score > float("-inf")  # it would have been sent
    after = _next_edition(db, settings, rated.subscriber_id, write=True)
    after_position, after_score = _place(after, rated.twin.id)
    # Lower: behind more papers than before, or (one rating must not swamp the keywords, so
    # it may keep its place) at a lower score; never ahead of where it was.
    assert after_position >= before_position
    assert after_position > before_position or after_score < before_score
