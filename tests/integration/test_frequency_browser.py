"""Choosing "weekly on Monday" in a real browser, at sign-up and on the settings page."""

from __future__ import annotations

import re

import pytest

from newsletter import storage
from newsletter.models import ACTIVE
from tests.integration.test_web_browser import (  # noqa: F401  (fixtures)
    _wait_for_mail,
    page,
    site,
)

EMAIL = "grace@example.org"  # the address _wait_for_mail() waits for

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _schedule(db):
    with db.session() as session:
        subscriber = storage.subscriber_by_email(session, EMAIL)
        assert subscriber is not None
        return subscriber.state, subscriber.frequency, subscriber.send_weekday


def test_weekly_on_monday_chosen_at_sign_up_and_on_the_settings_page(site, page, smtp_server):  # noqa: F811
    from playwright.sync_api import expect

    base_url, settings, db = site
    page.goto(f"{base_url}/")
    expect(page.get_by_label("Every day there are new papers")).to_be_checked()
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Keywords").fill("diffusion")
    page.get_by_label("Once a week").check()
    page.get_by_label("Weekly, on").select_option(label="Monday")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    confirmation = _wait_for_mail(smtp_server, 1)
    assert _schedule(db)[1:] == ("weekly", 0)

    link = re.search(r"http://\S+/confirm/\S+", confirmation.get_body(("plain",)).get_content())
    page.goto(link.group(0))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="You are subscribed")).to_be_visible()
    assert _schedule(db) == (ACTIVE, "weekly", 0)

    # The settings page shows the choice, and changing it is saved.
    page.get_by_role("link", name="Change your settings").click()
    expect(page.get_by_text("it arrives every Monday")).to_be_visible()
    expect(page.get_by_label("Once a week")).to_be_checked()
    expect(page.get_by_label("Weekly, on")).to_have_value("0")
    page.get_by_label("On weekdays").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    assert _schedule(db) == (ACTIVE, "weekdays", 0)
    page.get_by_label("Once a week").check()
    page.get_by_label("Weekly, on").select_option(label="Friday")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    assert _schedule(db) == (ACTIVE, "weekly", 4)
    page.get_by_label("Weekly, on").select_option(label="Monday")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Your settings are saved.")).to_be_visible()
    expect(page.get_by_text("it arrives every Monday")).to_be_visible()
    assert _schedule(db) == (ACTIVE, "weekly", 0)
    assert page.problems == []
