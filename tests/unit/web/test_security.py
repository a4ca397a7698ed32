"""Security headers, the body size limit and error pages (the health check: test_health.py)."""

from __future__ import annotations

import pytest

from newsletter.models import ACTIVE
from newsletter.web.security import MAX_BODY_BYTES


@pytest.mark.parametrize(
    "path", ["/", "/preview", "/healthz", "/static/style.css", "/no-such-page", "/confirm/bad"]
)
def test_every_response_carries_the_security_headers(w, path):
    response = w.client.get(path)
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def test_pages_are_not_cached_but_static_files_are_versioned(w):
    page = w.client.get("/")
    assert page.headers["cache-control"] == "no-store"
    assert "cache-control" not in w.client.get("/static/app.js").headers
    stylesheet = page.text.split('rel="stylesheet" href="', 1)[1].split('"', 1)[0]
    assert stylesheet.startswith("/static/style.css?v=")
    assert w.client.get(stylesheet).status_code == 200


def test_pages_use_no_inline_script_or_style(w, web_papers):
    subscriber_id = w.add()
    for path in ("/", "/preview?keywords=diffusion", w.path("manage", subscriber_id)):
        html = w.client.get(path).text.lower()
        assert "<script>" not in html and "<script " not in html.replace("<script src=", "")
        assert " style=" not in html and "<style" not in html and " onclick=" not in html


def test_https_sites_get_hsts_and_a_host_only_cookie(w, settings, db):
    from newsletter.web.app import create_app

    secure = settings.model_copy(update={"base_url": "https://digest.example.org"})
    with type(w.client)(create_app(secure, db), base_url="https://testserver") as client:
        page = client.get("/")
    assert page.headers["strict-transport-security"].startswith("max-age=")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-newsletter_csrf=") and "Secure" in cookie


def test_a_body_over_the_limit_is_refused(w):
    big = {"email": "x@example.org", "keywords": "k" * (MAX_BODY_BYTES + 1)}
    response = w.client.post("/", data=big)
    assert response.status_code == 413
    assert response.headers["content-security-policy"]
    assert w.by_email("x@example.org") is None


def test_a_chunked_body_over_the_limit_is_refused(w):
    token = w.csrf_token(w.client.get("/").text)

    def chunks():
        yield f"csrf_token={token}&email=x%40example.org&keywords=".encode()
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b"k" * 1024

    response = w.client.post(
        "/", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 413
    assert "larger than this site accepts" in response.text
    assert w.by_email("x@example.org") is None


def test_the_one_click_post_is_size_limited_too(w):
    subscriber_id = w.add()
    response = w.client.post(w.path("unsubscribe", subscriber_id), content=b"x" * 70_000)
    assert response.status_code == 413
    assert w.get(subscriber_id).state == ACTIVE


def test_unknown_pages_and_methods_get_pages(w):
    missing = w.client.get("/no-such-page")
    assert missing.status_code == 404 and "There is no page at this address" in missing.text
    wrong = w.client.put("/")
    assert wrong.status_code == 405 and "GET" in wrong.headers["allow"]


def test_files_cannot_be_uploaded(w, outbox):
    token = w.csrf_token(w.client.get("/").text)
    # A complete, valid sign-up but for the file beside it: only the upload is at fault.
    fields = {
        "csrf_token": token,
        "email": "x@example.org",
        "keywords": "diffusion",
        "send_hour": "7",
        "timezone": "UTC",
        "digest_size": "10",
    }
    response = w.client.post("/", data=fields, files={"attachment": ("a.txt", b"diffusion")})
    assert response.status_code == 400
    assert w.by_email("x@example.org") is None
    assert outbox() == []
