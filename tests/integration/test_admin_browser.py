"""The operator's dashboard in a real browser, with JavaScript off: sign in, find a subscriber,
read their last deliveries, pause them, look at the charts. Debian's headless Chromium
(Playwright), uvicorn on a free port, a real SMTP server (aiosmtpd) for the digest sent before.
Screenshots go to the test's temporary directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from newsletter import pipeline, storage, subscriptions
from newsletter.models import ACTIVE, PAUSED, SENT
from newsletter.web.admin import accounts
from tests.support.web import demo_site, watched_page

PASSWORD = "a long operator passphrase"
EMAIL = "ada@example.org"

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def site(tmp_path, smtp_server) -> Iterator[tuple[str, object, object]]:
    """The web app under uvicorn in a thread, an operator, and a subscriber sent today's digest."""

    def prepare(settings, db) -> None:
        now = storage.utcnow()
        with db.session() as session:
            accounts.add_operator(session, "olga", PASSWORD, now)
            for email in (EMAIL, "bob@example.org"):
                subscriptions.subscribe(
                    session,
                    settings,
                    email=email,
                    keywords="diffusion, agents, language models",
                    timezone="UTC",
                    now=now,
                    confirmed=True,
                )
        pipeline.plan(db, settings, edition=now.date())
        pipeline.deliver(db, settings)
        assert len(smtp_server.to(EMAIL)) == 1

    with demo_site(tmp_path / "var", smtp_server.url, "browser-test", prepare) as (settings, db):
        yield settings.base_url, settings, db


@pytest.fixture
def page(chromium):
    # No JavaScript: every page and chart is rendered by the server.
    with watched_page(chromium, java_script_enabled=False, locale="en-GB") as page:
        yield page


def _state(db, email: str = EMAIL) -> str:
    with db.session() as session:
        return storage.subscriber_by_email(session, email).state


def _ledger(db) -> list[tuple]:
    from sqlalchemy import select

    from newsletter.models import Delivery

    with db.session() as session:
        return [tuple(r) for r in session.execute(select(Delivery.id, Delivery.state)).all()]


def test_sign_in_search_read_deliveries_pause_and_see_the_charts(site, page, tmp_path):
    from playwright.sync_api import expect

    base_url, _settings, db = site

    # Anonymous: sent to the sign-in page.
    response = page.goto(f"{base_url}/admin/subscribers")
    assert response.request.redirected_from.response().status == 303
    expect(page.get_by_role("heading", name="Operator sign-in")).to_be_visible()

    # A wrong password: 401, the form again, no session.
    page.get_by_label("Name").fill("olga")
    page.get_by_label("Password").fill("not the password")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_text("Wrong name or password.")).to_be_visible()
    page.screenshot(path=str(tmp_path / "admin-wrong-password.png"), full_page=True)

    # The right one: the overview and its three charts.
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    for chart in ("chart-subscribers", "chart-deliveries", "chart-papers"):
        expect(page.locator(f"svg#{chart}")).to_be_visible()
        assert page.locator(f"svg#{chart} rect[data-series]").count() > 0, chart
    sent_bar = page.locator('svg#chart-deliveries rect[data-series="sent"]')
    assert sent_bar.get_attribute("data-value") == "2"
    assert sent_bar.bounding_box()["height"] > 10  # drawn, not just in the markup
    page.screenshot(path=str(tmp_path / "admin-overview.png"), full_page=True)

    # Find the subscriber and open their page: the digest sent today.
    page.get_by_role("link", name="Subscribers").click()
    page.get_by_label("Address contains").fill("ada@")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#results tbody tr")
    expect(results).to_have_count(1)
    page.get_by_role("link", name=EMAIL).click()
    expect(page.get_by_role("heading", name=EMAIL)).to_be_visible()
    today = storage.utcnow().date().isoformat()
    row = page.locator(f'#deliveries tr[data-edition="{today}"]')
    expect(row).to_contain_text(SENT)
    expect(row).to_contain_text(f"digest.{today.replace('-', '')}.")
    page.screenshot(path=str(tmp_path / "admin-subscriber.png"), full_page=True)

    # Pause them.
    assert _state(db) == ACTIVE
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_text("The subscriber is paused")).to_be_visible()
    expect(page.locator("#state")).to_have_text(PAUSED)
    assert _state(db) == PAUSED
    assert _state(db, "bob@example.org") == ACTIVE
    page.screenshot(path=str(tmp_path / "admin-paused.png"), full_page=True)

    # No CSP violation, nothing broken; only the wrong password's 401, as intended.
    assert [p for p in page.problems if "status of 401" not in p] == []
    for name in ("wrong-password", "overview", "subscriber", "paused"):
        assert (tmp_path / f"admin-{name}.png").stat().st_size > 1000


def test_anonymous_and_wrong_password_requests_change_nothing(site, chromium):
    base_url, _settings, db = site
    context = chromium.new_context()
    try:
        api = context.request
        login = api.get(f"{base_url}/admin/login").text()
        token = login.split('name="csrf_token" value="')[1].split('"')[0]
        before = (_state(db), _ledger(db))
        with db.session() as session:
            subscriber_id = storage.subscriber_by_email(session, EMAIL).id
        for what in ("pause", "unsubscribe", "resend"):
            answer = api.post(
                f"{base_url}/admin/subscribers/{subscriber_id}/{what}",
                form={"csrf_token": token, "request_key": "k" * 24},
                max_redirects=0,
            )
            assert answer.status == 303, what
            assert answer.headers["location"] == "/admin/login"
        wrong = api.post(
            f"{base_url}/admin/login",
            form={"csrf_token": token, "username": "olga", "password": "wrong password"},
            max_redirects=0,
        )
        assert wrong.status == 401
        answer = api.post(
            f"{base_url}/admin/subscribers/{subscriber_id}/pause",
            form={"csrf_token": token},
            max_redirects=0,
        )
        assert answer.status == 303
        assert (_state(db), _ledger(db)) == before
    finally:
        context.close()
