"""The forms map their fields to the subscription rules: one parse per sign-up, every message
beside its field, the same keyword limit on the sign-up and the manage page."""

from __future__ import annotations

import re
from html import unescape

import pytest

from newsletter import profile
from newsletter.models import ACTIVE, UNSUBSCRIBED
from newsletter.subscriptions import MAX_KEYWORDS_CHARS

KEYWORDS = 'diffusion models, "label noise", -medical'
TOO_LONG = ", ".join(["word"] * 900)[: MAX_KEYWORDS_CHARS + 1]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text newsletter.profile.parse_profile is called with from now on."""
    calls: list[str] = []
    real = profile.parse_profile

    def counting(text: str) -> profile.Profile:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(profile, "parse_profile", counting)
    return calls


def _error(html: str, field: str) -> str:
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
    assert found, f"no message beside {field}"
    return unescape(found.group(1))


def test_a_sign_up_parses_its_keywords_once_from_the_form_to_the_database(w, outbox, parses):
    w.signup("ada@example.org", keywords=KEYWORDS)  # the form, the queue, the sender
    [message] = outbox()
    w.post_form(w.confirm_path(message))
    subscriber = w.by_email("ada@example.org")
    assert subscriber is not None
    assert (subscriber.state, subscriber.keywords) == (ACTIVE, KEYWORDS)
    assert parses == [KEYWORDS]


def test_a_returning_subscriber_s_keywords_are_parsed_once_too(w, outbox, parses):
    subscriber_id = w.add("back@example.org", state=UNSUBSCRIBED, keywords="transformers")
    parses.clear()
    w.signup("back@example.org", keywords=KEYWORDS)  # waits in pending_preferences
    [message] = outbox()
    w.post_form(w.confirm_path(message))
    subscriber = w.get(subscriber_id)
    assert (subscriber.state, subscriber.keywords) == (ACTIVE, KEYWORDS)
    assert parses == [KEYWORDS]


def test_keywords_over_the_limit_are_refused_beside_the_field_at_sign_up(w, outbox):
    page = w.signup("ada@example.org", keywords=TOO_LONG)
    assert page.status_code == 422
    assert _error(page.text, "keywords") == "Keep your keywords under 5,000 characters."
    assert w.by_email("ada@example.org") is None and outbox() == []


def test_every_bad_setting_gets_its_message_beside_it_and_nothing_is_saved(w):
    subscriber_id = w.add(keywords="diffusion", timezone="Europe/Paris", send_hour=7)
    path = w.path("manage", subscriber_id)
    page = w.post_form(
        path, keywords=TOO_LONG, send_hour="25", timezone="Mars/Base", digest_size="many"
    )
    assert page.status_code == 422
    html = page.text
    assert _error(html, "keywords") == "Keep your keywords under 5,000 characters."
    assert _error(html, "send_hour") == "The send hour must be from 0 to 23."
    assert _error(html, "timezone") == "Unknown time zone 'Mars/Base'."
    assert _error(html, "digest_size") == "Enter a number of papers from 1 to 50."
    stored = w.get(subscriber_id)
    assert (stored.keywords, stored.timezone, stored.send_hour) == ("diffusion", "Europe/Paris", 7)
