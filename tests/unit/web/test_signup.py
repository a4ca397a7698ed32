"""The sign-up page: validation, double opt-in mail, no enumeration, CSRF and rate limits."""

from __future__ import annotations

from datetime import timedelta
from html import unescape

from newsletter import tokens
from newsletter.models import ACTIVE, PENDING
from newsletter.web.signup import ADDRESS_SIGNUPS_PER_HOUR

FIELDS = {
    "email": "ada@example.org",
    "keywords": "diffusion",
    "send_hour": "7",
    "timezone": "UTC",
    "digest_size": "10",
}


def test_the_form_explains_the_keywords_and_sets_a_csrf_cookie(w):
    page = w.client.get("/")
    assert page.status_code == 200
    html = page.text
    for field in ("email", "keywords", "send_hour", "timezone", "digest_size"):
        assert f'<label for="{field}">' in html and f'id="{field}" name="{field}"' in html
    for example in ('"label noise"', "-medical", "author:Hinton", "cat:cs.LG", "transformer^2"):
        assert example in unescape(html)
    assert "data-auto-timezone" in html  # the script may fill in the browser's zone
    assert "newsletter_csrf=" in page.headers["set-cookie"]
    assert 'name="csrf_token"' in html


def test_a_sign_up_makes_a_pending_subscriber_and_mails_a_link(w, outbox):
    page = w.signup("Ada@Example.ORG", send_hour="6", digest_size="12")
    assert page.status_code == 200
    assert "Check your inbox" in page.text and "ada@example.org" in page.text
    subscriber = w.by_email("ada@example.org")
    assert subscriber is not None
    assert subscriber.state == PENDING
    assert subscriber.keywords == 'diffusion models, "label noise", -medical'
    preferences = (subscriber.send_hour, subscriber.timezone, subscriber.digest_size)
    assert preferences == (6, "Europe/Paris", 12)
    assert subscriber.confirm_sent_at is not None
    [message] = outbox()
    assert message["To"] == "ada@example.org"
    assert message["List-Unsubscribe"] is None  # a confirmation is not a list mail
    token = w.confirm_path(message).rsplit("/", 1)[1]
    assert tokens.read_token(w.settings, "confirm", token) == (subscriber.id, subscriber.link_key)


def test_invalid_input_shows_the_form_again_with_messages_and_values(w, outbox):
    page = w.signup(
        "not-an-address",
        keywords='"unclosed',
        send_hour="25",
        timezone="Mars/Base",
        digest_size="many",
    )
    assert page.status_code == 422
    html = page.text
    for field in ("email", "keywords", "send_hour", "timezone", "digest_size"):
        assert f'id="{field}-error"' in html, field
    assert html.count('aria-invalid="true"') == 5
    assert 'value="not-an-address"' in html
    assert "&#34;unclosed</textarea>" in html
    assert '<option value="Mars/Base" selected>' in html  # what was sent is shown, escaped
    assert "column" in html  # the keyword error says where
    assert "data-auto-timezone" not in html  # the script must not overwrite a choice
    assert w.by_email("not-an-address") is None
    assert outbox() == []


def test_one_bad_field_keeps_the_others(w):
    page = w.signup(keywords="   ")
    assert page.status_code == 422
    assert 'id="keywords-error"' in page.text and 'id="email-error"' not in page.text
    assert 'value="ada@example.org"' in page.text
    assert '<option value="Europe/Paris" selected>' in page.text
    assert w.by_email("ada@example.org") is None


def test_user_text_is_escaped(w):
    page = w.signup("not an address <script>", keywords="<script>alert(1)</script>")
    assert page.status_code == 422
    assert "<script>alert(1)" not in page.text and "address <script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in page.text


def test_a_known_address_gets_the_same_page_and_a_fresh_link(w, outbox):
    subscriber_id = w.add("known@example.org", state=ACTIVE, keywords="transformers")
    new = w.signup("new@example.org")
    known = w.signup("known@example.org")
    assert known.status_code == new.status_code == 200

    def main(html: str, address: str) -> str:
        return html[html.index("<main") : html.index("</main>")].replace(address, "X")

    assert main(known.text, "known@example.org") == main(new.text, "new@example.org")
    [mail] = [m for m in outbox() if m["To"] == "known@example.org"]
    # The sign-up changed nothing of the confirmed subscriber: only the owner can.
    subscriber = w.get(subscriber_id)
    assert subscriber.state == ACTIVE and subscriber.keywords == "transformers"
    # Its link leads to a page that says so and offers the settings page.
    page = w.client.get(w.confirm_path(mail))
    assert "already subscribed" in page.text and "/manage/" in page.text


def test_a_new_link_is_mailed_at_most_every_two_minutes(w, outbox):
    w.signup()
    w.signup()
    assert len(outbox()) == 1
    later = w.travel(timedelta(minutes=3))
    w.signup()
    assert len(outbox()) == 2
    subscriber = w.by_email("ada@example.org")
    assert subscriber.state == PENDING and subscriber.confirm_sent_at == later


def test_a_sign_up_without_a_valid_csrf_token_changes_nothing(w, outbox):
    w.client.get("/")  # the browser has its cookie; a forged form has no matching token
    assert w.client.post("/", data=FIELDS).status_code == 403
    forged = w.client.post("/", data={**FIELDS, "csrf_token": "forged"})
    assert forged.status_code == 403
    assert "expired" in forged.text and "Nothing was changed" in forged.text
    assert w.by_email("ada@example.org") is None
    assert outbox() == []


def test_a_token_of_another_browser_is_refused(w, outbox):
    token = w.csrf_token(w.client.get("/").text)
    with w.new_client() as other:
        other.get("/")  # has a cookie of its own
        assert other.post("/", data={**FIELDS, "csrf_token": token}).status_code == 403
    with w.new_client() as cookieless:
        assert cookieless.post("/", data={**FIELDS, "csrf_token": token}).status_code == 403
    assert w.by_email("ada@example.org") is None


def test_sign_ups_are_limited_per_network(w, settings, outbox):
    for number in range(settings.signup_rate_per_hour):
        assert w.signup(f"person{number}@example.org").status_code == 200
    refused = w.signup("one-more@example.org")
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert "try again in" in refused.text
    assert w.by_email("one-more@example.org") is None
    with w.new_client("198.51.100.7") as elsewhere:  # another network is not affected
        assert w.signup("one-more@example.org", client=elsewhere).status_code == 200
    assert len(outbox()) == settings.signup_rate_per_hour + 1


def test_sign_ups_are_limited_per_address(w):
    for number in range(ADDRESS_SIGNUPS_PER_HOUR):
        with w.new_client(f"203.0.113.{number}") as client:
            assert w.signup("target@example.org", client=client).status_code == 200
    with w.new_client("203.0.113.200") as client:
        assert w.signup("target@example.org", client=client).status_code == 429
        assert w.signup("someone-else@example.org", client=client).status_code == 200


def test_an_unsent_confirmation_can_be_retried(w, settings, web):
    # A mail server that is down: the page says so and the next attempt may send again.
    web.settings = settings.model_copy(update={"smtp_url": "smtp://127.0.0.1:9"})
    page = w.signup()
    assert page.status_code == 503
    assert "could not send" in page.text
    subscriber = w.by_email("ada@example.org")
    assert subscriber.state == PENDING and subscriber.confirm_sent_at is None
