"""Double opt-in: the emailed link shows a page; only its button confirms; bad links refused."""

from __future__ import annotations

import pytest

from newsletter.models import ACTIVE, PAUSED, PENDING, UNSUBSCRIBED


@pytest.fixture
def pending(w, outbox) -> tuple[int, str]:
    """A subscriber who signed up on the page, and the path of the link they were mailed."""
    w.signup()
    [message] = outbox()
    return w.by_email("ada@example.org").id, w.confirm_path(message)


def test_opening_the_link_shows_a_button_and_changes_nothing(w, pending):
    subscriber_id, path = pending
    page = w.client.get(path)
    assert page.status_code == 200
    assert '<button type="submit" class="primary">Confirm</button>' in page.text
    assert f'action="{path}"' in page.text
    assert 'name="robots" content="noindex' in page.text
    assert w.get(subscriber_id).state == PENDING


def test_the_button_confirms(w, pending):
    subscriber_id, path = pending
    page = w.post_form(path)
    assert page.status_code == 200
    assert "You are subscribed" in page.text
    subscriber = w.get(subscriber_id)
    assert subscriber.state == ACTIVE and subscriber.confirmed_at is not None
    # The page leads to working settings and unsubscribe pages.
    manage = page.text.split('href="/manage/', 1)[1].split('"', 1)[0]
    assert w.client.get(f"/manage/{manage}").status_code == 200
    unsubscribe = page.text.split('href="/unsubscribe/', 1)[1].split('"', 1)[0]
    assert w.client.get(f"/unsubscribe/{unsubscribe}").status_code == 200


def test_confirming_twice_is_harmless(w, pending):
    subscriber_id, path = pending
    w.post_form(path)
    confirmed_at = w.get(subscriber_id).confirmed_at
    again = _send(w, "post", path)
    assert again.status_code == 200 and "already subscribed" in again.text
    assert w.get(subscriber_id).confirmed_at == confirmed_at


def test_a_paused_subscriber_stays_paused(w):
    subscriber_id = w.add(state=PAUSED)
    path = w.path("confirm", subscriber_id)
    assert "already subscribed" in w.client.get(path).text
    page = _send(w, "post", path)
    assert page.status_code == 200 and "paused" in page.text
    assert w.get(subscriber_id).state == PAUSED


def test_an_unsubscribed_address_that_signs_up_again_is_active_once_confirmed(w, outbox):
    subscriber_id = w.add("back@example.org", state=UNSUBSCRIBED)
    w.signup("back@example.org")
    [message] = outbox()
    w.post_form(w.confirm_path(message))
    subscriber = w.get(subscriber_id)
    assert subscriber.state == ACTIVE and subscriber.unsubscribed_at is None


def test_confirming_needs_the_csrf_token(w, pending):
    subscriber_id, path = pending
    w.client.get(path)
    assert w.client.post(path).status_code == 403
    assert w.client.post(path, data={"csrf_token": "x"}).status_code == 403
    assert w.get(subscriber_id).state == PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_forged_link_is_refused(w, pending, method):
    subscriber_id, path = pending
    token = path.rsplit("/", 1)[1]
    for forged in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "nonsense", "a.b.c"):
        page = _send(w, method, f"/confirm/{forged}")
        assert page.status_code == 400, forged
        assert "This link is not valid" in page.text
    assert w.get(subscriber_id).state == PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_link_for_another_page_is_refused(w, pending, method):
    subscriber_id, _ = pending
    for purpose in ("manage", "unsubscribe"):
        page = _send(w, method, f"/confirm/{w.token(purpose, subscriber_id)}")
        assert page.status_code == 400
    assert w.get(subscriber_id).state == PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_expired_link_is_refused(w, pending, method):
    subscriber_id, _ = pending
    page = _send(w, method, f"/confirm/{w.expired_token(subscriber_id)}")
    assert page.status_code == 410
    assert "expired" in page.text and "Sign up again" in page.text
    assert w.get(subscriber_id).state == PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_revoked_link_is_refused(w, pending, method):
    subscriber_id, path = pending
    w.revoke(subscriber_id)
    page = _send(w, method, path)
    assert page.status_code == 410
    assert "no longer valid" in page.text
    assert w.get(subscriber_id).state == PENDING


def test_a_confirmation_link_is_valid_for_48_hours(w, pending):
    subscriber_id, _ = pending
    path = f"/confirm/{w.old_token('confirm', subscriber_id, hours=47.5)}"
    assert w.post_form(path).status_code == 200
    assert w.get(subscriber_id).state == ACTIVE


def test_a_link_for_a_deleted_subscriber_is_refused(w):
    from newsletter import tokens

    token = tokens.make_token(w.settings, "confirm", 999, tokens.new_link_key())
    page = w.client.get(f"/confirm/{token}")
    assert page.status_code == 410 and "no longer valid" in page.text


def _send(w, method: str, path: str):
    """GET the path, or POST to it with a valid CSRF token (so only the link is at fault)."""
    if method == "get":
        return w.client.get(path)
    token = w.csrf_token(w.client.get("/").text)
    return w.client.post(path, data={"csrf_token": token})
