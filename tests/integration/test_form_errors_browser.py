"""Form errors in a real browser: the invalid field turns red, each message shows once."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def site(tmp_path, live_site) -> str:
    from newsletter.config import load_settings
    from newsletter.db import Database

    settings = load_settings(
        var_dir=tmp_path / "var", secret_key="browser-test", sources="hf_daily"
    )
    db = Database(settings)
    db.upgrade()
    yield live_site(settings, db)
    db.dispose()


def test_an_invalid_email_field_turns_red_and_its_message_shows_once(site, chromium):
    context = chromium.new_context(locale="en-GB", color_scheme="light")
    page = context.new_page()
    page.goto(site + "/")
    page.fill("#email", "<b>ada</b>")
    page.fill("#keywords", '"label noise')
    page.click("button[type=submit].primary")
    page.wait_for_selector("#email-error")
    email = page.locator("#email")
    assert email.get_attribute("aria-invalid") == "true"
    border = email.evaluate("e => getComputedStyle(e).borderTopColor")
    danger = page.locator("#email-error").evaluate("e => getComputedStyle(e).color")
    assert border == danger == "rgb(179, 38, 30)"  # --danger, not the --line grey
    valid = page.locator("#digest_size").evaluate("e => getComputedStyle(e).borderTopColor")
    assert valid != danger
    body = page.locator("main").inner_text()
    # Each message once, beside its field; the summary names the fields.
    message = page.locator("#keywords-error").inner_text()
    assert message.startswith("A quote is not closed") and body.count(message) == 1
    assert body.count(page.locator("#email-error").inner_text()) == 1
    assert "<b>ada</b>" not in page.locator("#email-error").inner_text()
    assert page.locator(".alert-error a[href='#email']").inner_text() == "Email address"
    context.close()
