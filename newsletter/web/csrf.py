"""CSRF protection: a random cookie, and forms carrying a signed copy of it (double submit)."""

from __future__ import annotations

import hmac
import re
import secrets
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from newsletter.config import Settings

FIELD = "csrf_token"
MAX_AGE = 2 * 24 * 3600  # a form left open in a tab for two days still submits
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{32,64}")


class CsrfError(Exception):
    """A state-changing form came without a valid token: forged, stale, or cookies are off."""


class ForeignOrigin(CsrfError):
    """A state-changing form was sent from a page of another site."""


def _origin(url: str) -> str | None:
    """scheme://host[:port] of a URL, lower-case; None if it has none."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: Request, settings: Settings) -> None:
    """Raise ForeignOrigin unless the form was sent from this site, by Origin, else Referer.

    Browsers send Origin with every form POST (as "null" from sandboxed frames and opaque
    pages, refused here). A request with neither header comes from an old browser or a
    privacy setting that strips them; it is let through to the CSRF token check, which a
    page of another site cannot pass, so refusing it would only lock those people out.
    """
    claimed = request.headers.get("origin")
    if claimed is None:
        referer = request.headers.get("referer")
        if referer is None:
            return
        claimed = _origin(referer) or "null"
    ours = {_origin(settings.base_url), _origin(str(request.base_url))}
    if claimed.strip().lower() not in ours:
        raise ForeignOrigin(claimed[:100])


def cookie_name(settings: Settings) -> str:
    # The __Host- prefix stops a sibling subdomain from planting its own cookie (https only).
    https = settings.base_url.startswith("https://")
    return "__Host-newsletter_csrf" if https else "newsletter_csrf"


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    assert settings.secret_key, "load_settings() always sets a secret key"
    return URLSafeTimedSerializer(settings.secret_key, salt="newsletter.csrf")


def _cookie(request: Request, settings: Settings) -> str | None:
    value = request.cookies.get(cookie_name(settings))
    return value if value and _COOKIE_VALUE.fullmatch(value) else None


def form_token(request: Request, settings: Settings) -> str:
    """The token to put in a form of this page; a new cookie is set if the browser has none."""
    value = _cookie(request, settings) or getattr(request.state, "csrf_cookie", None)
    if value is None:
        value = request.state.csrf_cookie = secrets.token_urlsafe(32)
    return str(_serializer(settings).dumps(value))


def check(request: Request, settings: Settings, submitted: object) -> None:
    """Raise CsrfError unless the form came from this site (check_origin) and `submitted` is
    a fresh signed copy of this browser's cookie."""
    check_origin(request, settings)
    cookie = _cookie(request, settings)
    if cookie is None or not isinstance(submitted, str) or not submitted:
        raise CsrfError("missing")
    try:
        value = _serializer(settings).loads(submitted, max_age=MAX_AGE)
    except BadSignature:
        raise CsrfError("bad token") from None
    if not isinstance(value, str) or not hmac.compare_digest(value, cookie):
        raise CsrfError("token for another browser")


def set_cookie(request: Request, response: Response, settings: Settings) -> None:
    """Send the cookie that form_token() created while the page was rendered, if any."""
    value = getattr(request.state, "csrf_cookie", None)
    if value:
        response.set_cookie(
            cookie_name(settings),
            value,
            max_age=MAX_AGE,
            path="/",
            secure=settings.base_url.startswith("https://"),
            httponly=True,
            samesite="lax",
        )
