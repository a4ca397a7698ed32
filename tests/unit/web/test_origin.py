"""Every state-changing form checks where it was sent from (Origin, else Referer).

A form posted from another site is refused with 403 and changes nothing, even with a valid
CSRF token. A browser that sends neither header (old, or a privacy setting) still gets in with
its token. The RFC 8058 one-click unsubscribe is a mail client's POST, not a form: exempt.
"""

from __future__ import annotations

import re

import pytest

from newsletter.models import ACTIVE, PAUSED, PENDING, UNSUBSCRIBED

OURS = "http://127.0.0.1:8000"  # the settings' base_url
EVIL = "https://evil.example"
SETTINGS = {"keywords": "agents", "send_hour": "9", "timezone": "UTC", "digest_size": "3"}


def post(w, page: str, action: str | None = None, headers: dict[str, str] | None = None, **form):
    """GET `page` for its CSRF token, then POST the form with `headers`."""
    token = w.csrf_token(w.client.get(page).text)
    return w.client.post(action or page, data={"csrf_token": token, **form}, headers=headers)


SIGNUP = {
    "email": "eve-victim@example.org",
    "keywords": "diffusion",
    "send_hour": "7",
    "timezone": "UTC",
    "digest_size": "10",
}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": "null"},  # a sandboxed frame or a data: page
        {"Origin": "http://127.0.0.1:8000.evil.example"},
        {"Origin": "https://127.0.0.1:8000"},  # same host, another scheme: another origin
        {"Referer": f"{EVIL}/page"},
        {"Origin": EVIL, "Referer": f"{OURS}/"},  # Origin decides when present
    ],
)
def test_a_sign_up_from_another_site_is_refused(w, headers):
    response = post(w, "/", headers=headers, **SIGNUP)
    assert response.status_code == 403
    assert "Nothing was changed" in response.text
    w.settle()  # the background sender has nothing to do either
    assert w.by_email(SIGNUP["email"]) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no Origin, no Referer: the CSRF token is the proof
        {"Origin": OURS},
        {"Origin": "http://testserver"},  # the address the request came to
        {"Referer": f"{OURS}/?from=mail"},
    ],
)
def test_a_sign_up_from_this_site_or_without_origin_is_accepted(w, headers):
    response = post(w, "/", headers=headers, **SIGNUP)
    assert response.status_code == 200, response.text[:300]
    w.settle()  # the sign-up's row is written by the background sender
    subscriber = w.by_email(SIGNUP["email"])
    assert subscriber is not None and subscriber.state == PENDING


def test_confirming_from_another_site_is_refused(w):
    pending = w.add("p@example.org", state=PENDING)
    path = w.path("confirm", pending)
    assert post(w, path, headers={"Origin": EVIL}).status_code == 403
    assert w.get(pending).state == PENDING
    assert post(w, path, headers={"Origin": OURS}).status_code == 200
    assert w.get(pending).state == ACTIVE


def test_manage_forms_from_another_site_are_refused(w):
    active = w.add("m@example.org", keywords="diffusion")
    path = w.path("manage", active)
    assert post(w, path, headers={"Origin": EVIL}, **SETTINGS).status_code == 403
    assert post(w, path, f"{path}/pause", headers={"Origin": EVIL}).status_code == 403
    subscriber = w.get(active)
    assert (subscriber.keywords, subscriber.state) == ("diffusion", ACTIVE)
    assert post(w, path, f"{path}/pause", headers={"Origin": OURS}).status_code == 303
    assert w.get(active).state == PAUSED
    assert post(w, path, f"{path}/resume", headers={"Referer": EVIL}).status_code == 403
    assert w.get(active).state == PAUSED


def test_the_unsubscribe_button_from_another_site_is_refused(w):
    active = w.add("u@example.org")
    path = w.path("unsubscribe", active)
    refused = w.client.post(path, headers={"Origin": EVIL})  # the page's button: empty form
    assert refused.status_code == 403
    assert w.get(active).state == ACTIVE
    done = w.client.post(path, headers={"Origin": OURS})
    assert done.status_code == 200
    assert w.get(active).state == UNSUBSCRIBED
    # The way back is a signed page of its own (the unsubscribe link died with the unsubscribe).
    way_back = re.search(r'action="[^"]*(/resubscribe/[^"]+)"', done.text).group(1)
    again = post(w, way_back, way_back, headers={"Origin": EVIL})
    assert again.status_code == 403
    assert w.get(active).state == UNSUBSCRIBED


@pytest.mark.parametrize("headers", [{}, {"Origin": "https://mail.example.com"}])
def test_the_one_click_unsubscribe_needs_no_origin(w, headers):
    active = w.add("o@example.org")
    response = w.new_client().post(
        w.path("unsubscribe", active),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    assert response.status_code == 200
    assert w.get(active).state == UNSUBSCRIBED


def test_pages_send_their_origin_with_forms(w):
    # With "no-referrer" a browser sends `Origin: null` even to its own site; "same-origin"
    # keeps links private to other sites and lets our own forms name where they come from.
    assert w.client.get("/").headers["referrer-policy"] == "same-origin"
