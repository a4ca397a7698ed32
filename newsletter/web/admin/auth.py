"""Operator sign-in: rate-limited login, a signed session cookie, and the page guards."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from newsletter import storage
from newsletter.config import Settings
from newsletter.models import Operator
from newsletter.web.context import Web, client_ip, get_web, limit

SESSION_SECONDS = 12 * 3600
# Per address and per name: a guesser spreading over names still meets the first limit, and
# one spreading over addresses the second.
LOGIN_LIMITS = (("admin-login-ip", 20), ("admin-login-user", 10))
LOGIN_WINDOW = 15 * 60


class NotSignedIn(Exception):
    """An admin page was asked for without a valid operator session: go to the login page."""


def _https(settings: Settings) -> bool:
    return settings.base_url.startswith("https://")


def cookie_name(settings: Settings) -> str:
    # __Host-: only this exact host, over https, path / (a subdomain cannot plant one).
    return "__Host-newsletter_admin" if _https(settings) else "newsletter_admin"


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    assert settings.secret_key, "load_settings() always sets a secret key"
    return URLSafeTimedSerializer(settings.secret_key, salt="newsletter.admin.session")


def _fingerprint(operator: Operator) -> str:
    # A new password (or a removed account) ends every session signed before it.
    return hashlib.sha256(operator.password_hash.encode()).hexdigest()[:32]


def start_session(response: Response, settings: Settings, operator: Operator) -> None:
    """Set the session cookie: signed, expiring, HttpOnly, SameSite=Strict, Secure on https."""
    value = _serializer(settings).dumps([operator.id, _fingerprint(operator)])
    response.set_cookie(
        cookie_name(settings),
        str(value),
        max_age=SESSION_SECONDS,
        path="/",
        secure=_https(settings),
        httponly=True,
        samesite="strict",
    )


def end_session(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings), path="/", secure=_https(settings), httponly=True, samesite="strict"
    )


def signed_in(request: Request, web: Web) -> Operator | None:
    """The operator whose valid, unexpired session cookie came with the request, if any."""
    value = request.cookies.get(cookie_name(web.settings))
    if not value or len(value) > 512:
        return None
    try:
        operator_id, fingerprint = _serializer(web.settings).loads(value, max_age=SESSION_SECONDS)
    except (BadSignature, ValueError, TypeError):
        return None
    with web.db.session() as session:
        operator = session.get(Operator, operator_id) if isinstance(operator_id, int) else None
        if operator is None or not isinstance(fingerprint, str):
            return None
        if not hmac.compare_digest(_fingerprint(operator), fingerprint):
            return None
        session.expunge(operator)
        return operator


def dashboard_on(request: Request) -> None:
    """FastAPI dependency: 404 while no operator account exists (the dashboard is off)."""
    web = get_web(request)
    with web.db.session() as session:
        if storage.operator_count(session) == 0:
            raise HTTPException(404)


def require_operator(request: Request) -> None:
    """FastAPI dependency: the signed-in operator in request.state.operator, else NotSignedIn."""
    dashboard_on(request)
    operator = signed_in(request, get_web(request))
    if operator is None:
        raise NotSignedIn()
    request.state.operator = operator.username


def limit_login(request: Request, web: Web, username: str) -> None:
    """Count a login attempt; RateLimited (429) past the limits of its address or its name."""
    keys = {"admin-login-ip": client_ip(request), "admin-login-user": username.lower()[:64]}
    for kind, allowed in LOGIN_LIMITS:
        limit(web, f"{kind}:{keys[kind]}", allowed, LOGIN_WINDOW, "Too many sign-in attempts.")
